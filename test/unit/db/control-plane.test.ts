import { describe, expect, it } from 'vitest';
import { DATABASE_URL, pgliteDatabase, postgresDatabase } from './harness.js';
import { controlPlaneSuite } from './control-plane.suite.js';

describe('control plane store on PGlite', () => {
  controlPlaneSuite(pgliteDatabase);
});

describe.runIf(DATABASE_URL)('control plane store on Postgres', () => {
  controlPlaneSuite(() => postgresDatabase(DATABASE_URL!));
});

describe.runIf(DATABASE_URL)('migrations on Postgres, several processes starting at once', () => {
  it('the real migrations, raced by three pools on an empty schema, are applied once', async () => {
    const { migrate } = await import('../../../core/db/migrate.js');
    const t = await postgresDatabase(DATABASE_URL!);
    try {
      const clients = [t.db, await t.openAnother!(), await t.openAnother!()];
      const results = await Promise.all(clients.map((c) => migrate(c)));
      expect(results.filter((r) => r.length > 0)).toHaveLength(1);
      expect(results.flat()).toEqual(results.find((r) => r.length > 0));
      const { rows } = await t.db.query<{ version: string }>('SELECT version FROM schema_migrations');
      expect(rows.map((r) => r.version)).toEqual(results.flat());
    } finally {
      await t.dispose();
    }
  });
});
