import { randomBytes } from 'node:crypto';
import { openDatabase, type SqlClient } from '../../../core/db/sql-client.js';

/** A database for one test file, and how to open more clients on the same one, and throw it all away. */
export interface TestDatabase {
  label: string;
  db: SqlClient;
  /** Another client on the same database (real Postgres only: PGlite in memory is one instance). */
  openAnother?: () => Promise<SqlClient>;
  dispose(): Promise<void>;
}

export const DATABASE_URL = process.env.DATABASE_URL;

export async function pgliteDatabase(): Promise<TestDatabase> {
  const db = await openDatabase({});
  return { label: 'pglite', db, dispose: () => db.close() };
}

/** A fresh schema on the real server, used through search_path, dropped afterwards: parallel files never collide. */
export async function postgresDatabase(url: string): Promise<TestDatabase> {
  const schema = `sy_test_${randomBytes(6).toString('hex')}`;
  const admin = await openDatabase({ url, maxConnections: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const others: SqlClient[] = [];
  const db = await openDatabase({ url, schema });
  return {
    label: 'postgres',
    db,
    openAnother: async () => {
      const c = await openDatabase({ url, schema });
      others.push(c);
      return c;
    },
    dispose: async () => {
      await Promise.all([db, ...others].map((c) => c.close()));
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.close();
    },
  };
}
