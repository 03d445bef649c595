import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { startTextServer, vllmText, type TextServer } from './text-server.js';

// The command as built (npm test and the verify step build first); cli/main.ts registers it as `autoscaler`.
const modulePath = fileURLToPath(new URL('../../../dist/cli/autoscaler.js', import.meta.url));
const runner = `import(${JSON.stringify(pathToFileURL(modulePath).href)}).then((m) => m.runAutoscalerCommand(process.argv.slice(1))).then(() => process.exit(0), (e) => { console.error(e.message); process.exit(1); })`;

function run(args: string[]) {
  return spawnSync(process.execPath, ['-e', runner, '--', ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, PORT: '' } });
}

let server: TextServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('switchyard autoscaler (the command)', () => {
  it('prints its help, and exits 2 without --config', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('switchyard autoscaler --config autoscaler.yaml [--port 8081]');
    const bad = run([]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('switchyard autoscaler: --config is required');
  });

  it('exits 1 naming the bad field of a config', () => {
    const dir = mkdtempSync(join(tmpdir(), 'autoscaler-cli-'));
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, 'targets: []\n');
    const r = run(['--config', path]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('targets: list at least one scaling target');
  });

  it('serves /explain and /metrics and scales local replicas on scraped metrics, until SIGTERM', async () => {
    server = await startTextServer({ '/metrics': { body: vllmText(0.1, 3, 1) } });
    const dir = mkdtempSync(join(tmpdir(), 'autoscaler-cli-'));
    const path = join(dir, 'autoscaler.yaml');
    writeFileSync(
      path,
      `intervalMs: 100
log: { level: silent }
targets:
  - name: sim
    metric: waiting_requests
    targetValue: 1
    maxReplicas: 3
    source: { type: scrape, urls: [${server.url}] }
    actuator:
      kind: local
      command: [${JSON.stringify(process.execPath)}, -e, "setInterval(() => {}, 1 << 30)"]
      basePort: 41000
      output: ignore
`,
    );
    const child = spawn(process.execPath, ['-e', runner, '--', '--config', path, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const lines = createInterface({ input: child.stdout! });
      const [first] = (await once(lines, 'line')) as [string];
      const url = /listening on (http:\/\/\S+)/.exec(first)![1]!;
      expect(first).toContain('(sim: kpa on waiting_requests)');
      let text = '';
      for (let i = 0; i < 100 && !text.includes('-> 3 replicas -> 3'); i++) {
        text = await (await request(`${url}/explain?format=text`)).body.text();
        if (!text.includes('-> 3 replicas -> 3')) await new Promise((r) => setTimeout(r, 50));
      }
      expect(text).toMatch(/^target sim: waiting_requests 1 per replica against target 1 over the 60 s stable window .*-> 3 replicas -> 3 \((steady|at maxReplicas.*)\)$/m);
      expect(text).toMatch(/0 -> 3 {2}scale_up/);
      const metrics = await (await request(`${url}/metrics`)).body.text();
      expect(metrics).toContain('switchyard_autoscaler_current_replicas{target="sim"} 3');
    } finally {
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      expect(code).toBe(0);
    }
  });
});
