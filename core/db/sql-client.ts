import { randomBytes } from 'node:crypto';

/**
 * The one database interface every control-plane store uses. Two implementations run the same SQL:
 * PGlite (real Postgres compiled to WASM, the embedded default) and node-postgres (a Pool on DATABASE_URL).
 */
export interface SqlClient {
  query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<{ rows: R[] }>;
  /** Runs a script of several statements without parameters (migrations); `query` takes exactly one statement. */
  exec(text: string): Promise<void>;
  /** Runs `fn` in a transaction: committed when it resolves, rolled back when it throws. Nested calls use savepoints. */
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  /** 'pglite' or 'postgres', for logs and for the few places that must know (advisory locks are cheap on both). */
  readonly kind: 'pglite' | 'postgres';
}

export interface OpenDatabaseOptions {
  /** postgres:// URL (DATABASE_URL). Set: node-postgres. Unset: PGlite. */
  url?: string;
  /** PGlite data directory; unset means in memory. Ignored when `url` is set. */
  dataDir?: string;
  /** Postgres only: search_path for every pooled connection (tests isolate themselves in a fresh schema). */
  schema?: string;
  /** Postgres only: pool size; default 10. */
  maxConnections?: number;
}

export async function openDatabase(opts: OpenDatabaseOptions = {}): Promise<SqlClient> {
  if (opts.url !== undefined && opts.url !== '') return openPostgres(opts.url, opts);
  return openPglite(opts.dataDir);
}

/** The code Postgres gives an error (e.g. '23505' unique_violation), from either driver. */
export function sqlErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Runs `fn` inside a SAVEPOINT on a client already in a transaction. */
async function withSavepoint<T>(tx: SqlClient, fn: (tx: SqlClient) => Promise<T>): Promise<T> {
  const name = `sp_${randomBytes(6).toString('hex')}`;
  await tx.query(`SAVEPOINT ${name}`);
  try {
    const out = await fn(tx);
    await tx.query(`RELEASE SAVEPOINT ${name}`);
    return out;
  } catch (err) {
    await tx.query(`ROLLBACK TO SAVEPOINT ${name}`);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------- PGlite

async function openPglite(dataDir: string | undefined): Promise<SqlClient> {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = dataDir === undefined ? new PGlite() : new PGlite(dataDir);
  await db.waitReady;
  return {
    kind: 'pglite',
    query: async <R>(text: string, params?: unknown[]) => ({ rows: (await db.query<R>(text, params ?? [])).rows }),
    exec: async (text: string) => {
      await db.exec(text);
    },
    transaction: <T>(fn: (tx: SqlClient) => Promise<T>) =>
      db.transaction((tx) =>
        fn(
          inTransaction(
            'pglite',
            (text, params) => tx.query(text, params ?? []),
            (text) => tx.exec(text),
          ),
        ),
      ),
    close: () => db.close(),
  };
}

// ------------------------------------------------------------------------------------------- Postgres

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<SqlClient> {
  const pg = (await import('pg')).default;
  if (opts.schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(opts.schema)) throw new Error(`invalid schema name "${opts.schema}"`);
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    ...(opts.schema !== undefined ? { options: `-c search_path=${opts.schema}` } : {}),
  });
  // An idle client that loses its server (Postgres restarted) emits 'error' on the pool; without a listener
  // that would crash the process. The next query simply gets a fresh connection.
  pool.on('error', () => {});
  return {
    kind: 'postgres',
    query: async <R>(text: string, params?: unknown[]) => ({ rows: (await pool.query(text, params)).rows as R[] }),
    exec: async (text: string) => {
      await pool.query(text);
    },
    transaction: async <T>(fn: (tx: SqlClient) => Promise<T>) => {
      const conn = await pool.connect();
      let broken: Error | undefined;
      try {
        await conn.query('BEGIN');
        try {
          // Without parameters node-postgres uses the simple query protocol, which accepts several statements.
          const out = await fn(
            inTransaction(
              'postgres',
              (text, params) => conn.query(text, params),
              (text) => conn.query(text),
            ),
          );
          await conn.query('COMMIT');
          return out;
        } catch (err) {
          try {
            await conn.query('ROLLBACK');
          } catch (rollbackErr) {
            broken = rollbackErr as Error; // the connection is unusable: destroy it rather than return it to the pool
          }
          throw err;
        }
      } finally {
        conn.release(broken);
      }
    },
    close: () => pool.end(),
  };
}

/** A client bound to one open transaction: nested transactions become savepoints, and closing is a mistake. */
function inTransaction(
  kind: SqlClient['kind'],
  query: (text: string, params: unknown[] | undefined) => Promise<{ rows: unknown[] }>,
  exec: (text: string) => Promise<unknown>,
): SqlClient {
  const client: SqlClient = {
    kind,
    query: async <R>(text: string, params?: unknown[]) => ({ rows: (await query(text, params)).rows as R[] }),
    exec: async (text: string) => {
      await exec(text);
    },
    transaction: <T>(fn: (inner: SqlClient) => Promise<T>) => withSavepoint(client, fn),
    close: async () => {
      throw new Error('close() inside a transaction');
    },
  };
  return client;
}
