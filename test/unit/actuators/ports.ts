import { createServer } from 'node:net';

/** A base port such that base .. base + count - 1 were all free on 127.0.0.1 a moment ago. */
export async function findFreePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const servers: ReturnType<typeof createServer>[] = [];
    let ok = true;
    for (let p = base; p < base + count && ok; p++) {
      const s = createServer();
      ok = await new Promise<boolean>((resolve) => {
        s.once('error', () => resolve(false));
        s.listen(p, '127.0.0.1', () => resolve(true));
      });
      if (ok) servers.push(s);
    }
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}
