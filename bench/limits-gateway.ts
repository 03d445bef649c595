import { untilSignal, parseCommandArgs, usageError } from '../cli/args.js';
import { loadConfig } from '../core/config.js';
import { configKeyResolver } from '../router/auth.js';
import { createGateway } from '../router/server.js';
import { openBenchDatabase, seedTenant, type BenchDatabase } from './limits-setup.js';

/**
 * The gateway as `switchyard serve` builds it (createGateway), in the two shapes bench/limits-bench.ts compares:
 *
 *   plain   the client's key is a config key (auth.keys) and there is no control-plane database (db: null):
 *           no tenant, so no policy, no limits, no usage events;
 *   limits  no config keys; a control-plane database (PGlite in memory, or a fresh schema on database.url) holding
 *           one tenant whose key is the client's and three quotas that apply, and redis.url from the config: every
 *           request resolves a database key, reads the tenant's policy, reserves in Redis (Lua), settles, and
 *           sends a usage event into the Redis stream (drained into the database by this gateway's writer when the
 *           config's usage.writer is on).
 *
 *   node dist/bench/limits-gateway.js --config PATH --mode plain|limits      (env BENCH_KEY: the client's key)
 *
 * The config is read without env overrides (REDIS_URL, DATABASE_URL), so only what the bench wrote applies.
 */

const help = 'node dist/bench/limits-gateway.js --config PATH --mode plain|limits   (env BENCH_KEY: the API key clients send)';
const flags = parseCommandArgs('limits-gateway', help, { config: { type: 'string' }, mode: { type: 'string' }, model: { type: 'string', default: 'bench-model' } }, process.argv.slice(2));
if (flags.config === undefined) usageError('limits-gateway', '--config is required', help);
if (flags.mode !== 'plain' && flags.mode !== 'limits') usageError('limits-gateway', '--mode must be plain or limits', help);
const key = process.env.BENCH_KEY;
if (key === undefined || key === '') usageError('limits-gateway', 'env BENCH_KEY is not set', help);

const config = loadConfig({ path: flags.config, env: {} });
let database: BenchDatabase | undefined;
let gateway;
if (flags.mode === 'plain') {
  gateway = await createGateway({ config, resolver: configKeyResolver(config.auth.keys), db: null });
} else {
  database = await openBenchDatabase(config.database.url);
  gateway = await createGateway({ config, resolver: configKeyResolver([]), db: database.db });
  await seedTenant(gateway.store!, { model: flags.model, key });
}
const url = await gateway.listen();
console.log(`limits gateway listening on ${url}`);
await untilSignal();
await gateway.close();
await database?.dispose();
