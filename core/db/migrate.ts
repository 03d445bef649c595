import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { SqlClient } from './sql-client.js';

/**
 * A tiny migration runner over plain, ordered `.sql` files (`NNNN_name.sql`). All pending files are applied in
 * ONE transaction and recorded in `schema_migrations`; a transaction-scoped advisory lock makes two processes
 * starting at once apply each file exactly once (the second waits, then finds nothing to do).
 *
 * The files are read at run time from `migrations/` next to this module: the build copies them to
 * dist/core/db/migrations/ (see package.json "build").
 */

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/** An arbitrary constant, the same in every Switchyard process. */
const LOCK_KEY = '8318229093318160740';

export interface Migration {
  version: string;
  name: string;
  sql: string;
}

export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const out: Migration[] = [];
  for (const file of files) {
    const m = /^(\d+)_([A-Za-z0-9_.-]+)\.sql$/.exec(file);
    if (m === null) throw new Error(`migration file "${file}" is not named NNNN_name.sql`);
    if (out.some((o) => o.version === m[1])) throw new Error(`two migrations share version ${m[1]}`);
    out.push({ version: m[1]!, name: m[2]!, sql: await readFile(`${dir}/${file}`, 'utf8') });
  }
  return out;
}

/** Applies the pending migrations; returns the versions applied by this call (empty when up to date). */
export async function migrate(db: SqlClient, opts: { dir?: string; migrations?: Migration[] } = {}): Promise<string[]> {
  const migrations = opts.migrations ?? (await loadMigrations(opts.dir));
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY})`);
    await tx.query(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
         version text PRIMARY KEY,
         name text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const done = new Set((await tx.query<{ version: string }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      try {
        await tx.exec(m.sql);
      } catch (err) {
        throw new Error(`migration ${m.version}_${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.version);
    }
    return applied;
  });
}
