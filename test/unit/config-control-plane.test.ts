import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../core/config.js';

describe('config: database, admin and key cache', () => {
  it('defaults to embedded PGlite in memory, the SWITCHYARD_ADMIN_KEY env and a 5 s key cache', () => {
    const cfg = loadConfig({ env: {} });
    expect(cfg.database).toEqual({});
    expect(cfg.admin.keyEnv).toBe('SWITCHYARD_ADMIN_KEY');
    expect(cfg.auth.keyCacheTtlMs).toBe(5_000);
    expect(cfg.auth.keys).toEqual([]);
  });

  it('takes DATABASE_URL over the file and refuses a non-Postgres URL', () => {
    const cfg = loadConfig({ env: { DATABASE_URL: 'postgres://u@db:5432/x' }, base: { database: { url: 'postgres://other/y', dataDir: '/tmp/d' } } });
    expect(cfg.database).toEqual({ url: 'postgres://u@db:5432/x', dataDir: '/tmp/d' });
    expect(() => loadConfig({ env: { DATABASE_URL: 'mysql://db/x' } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { DATABASE_URL: 'mysql://db/x' } })).toThrow(/database\.url \(from env DATABASE_URL\)/);
  });
});
