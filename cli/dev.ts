import { randomBytes } from 'node:crypto';
import { loadConfig } from '../core/config.js';
import type { EngineSpec } from '../core/engine.js';
import { startSim, type RunningSim } from '../engine-sim/server.js';
import { apiKeyDigest, ControlPlaneError, type ControlPlaneStore } from '../core/db/control-plane-store.js';
import { configKeyResolver } from '../router/auth.js';
import { createGateway } from '../router/server.js';
import { startTelemetry } from '../router/tracing.js';
import { numberFlag, parseCommandArgs, untilSignal, usageError } from './args.js';

const help = `switchyard dev [--engines 4] [--port 8080] [--time-scale X] [--models a,b] [--config FILE]

The gateway plus N simulated vLLM engines, each its own server on a loopback port, with embedded state.
  --engines N      simulated engines (default 4)
  --port P         gateway port (default env PORT, else 8080)
  --time-scale X   run the engines' clocks X times faster than real time (default 1)
  --models a,b     models to serve, assigned to the engines in turn (default llama-3.1-8b-instruct)
  --config FILE    a switchyard.yaml whose settings apply on top (its engines are ignored)
State is embedded (PGlite in memory, or database.dataDir / DATABASE_URL). Two public LoRA adapters (sql-lora,
summarize-lora) are registered on the first model. A tenant "dev" is seeded with one API key:
env SWITCHYARD_API_KEY, or a new one printed at start. The admin key (for 'switchyard admin') is env
SWITCHYARD_ADMIN_KEY, or a new one printed at start.`;

export async function runDevCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs(
    'dev',
    help,
    {
      engines: { type: 'string' },
      port: { type: 'string' },
      'time-scale': { type: 'string' },
      models: { type: 'string' },
      config: { type: 'string', short: 'c' },
    },
    argv,
  );
  const engineCount = numberFlag('dev', 'engines', flags.engines, 4, (n) => Number.isInteger(n) && n >= 1 && n <= 64);
  const timeScale = numberFlag('dev', 'time-scale', flags['time-scale'], 1, (n) => n > 0);
  const port = flags.port === undefined ? undefined : numberFlag('dev', 'port', flags.port, 8080, (n) => Number.isInteger(n) && n >= 0 && n < 65536);
  const models = (flags.models ?? 'llama-3.1-8b-instruct').split(',').map((m) => m.trim()).filter((m) => m !== '');
  if (models.length === 0) usageError('dev', '--models lists no model');

  const envKey = process.env.SWITCHYARD_API_KEY || undefined;

  const config = loadConfig({
    path: flags.config,
    // The simulated engines speak vLLM's KV events with vLLM's block hashes: the index runs in precise mode.
    base: { kvcache: { hashing: 'vllm' } },
    env: port === undefined ? process.env : { ...process.env, PORT: String(port) },
  });
  const kvEvents = config.kvcache.enabled && config.kvcache.hashing === 'vllm';

  const sims: RunningSim[] = [];
  for (let i = 0; i < engineCount; i++) {
    sims.push(
      await startSim({
        model: models[i % models.length]!,
        port: 0,
        timeScale,
        seed: i,
        kvEventsEndpoint: kvEvents ? 'tcp://127.0.0.1:*' : undefined,
      }),
    );
  }
  const engines: EngineSpec[] = sims.map((sim, i) => ({
    id: `sim-${i}`,
    url: sim.url,
    kind: 'vllm',
    models: [sim.model],
    labels: { pool: 'default' },
    kvCapacityTokens: sim.kvCapacityTokens,
    kvEventsEndpoint: sim.kvEventsEndpoint,
  }));

  const stopTelemetry = await startTelemetry();
  const envAdminKey = process.env[config.admin.keyEnv] || undefined;
  const adminKey = envAdminKey ?? `sk-sy-admin-${randomBytes(24).toString('base64url')}`;
  const gateway = await createGateway({ config, engines, resolver: configKeyResolver(config.auth.keys), adminKey });
  const { key: apiKey, generated: keyWasGenerated } = await seedDevTenant(gateway.store!, envKey);
  const adapters = await seedDevAdapters(gateway.store!, models[0]!);
  const url = await gateway.listen();

  console.log(`switchyard dev: gateway on ${url} with ${engineCount} simulated engine(s)`);
  console.log(`  models:  ${models.join(', ')}`);
  console.log(`  adapters: ${adapters.join(', ')}   (LoRA on ${models[0]}, loaded on an engine at first use)`);
  console.log(`  API key: ${keyWasGenerated ? `${apiKey}   (generated; set SWITCHYARD_API_KEY to choose one)` : '(from SWITCHYARD_API_KEY)'}`);
  console.log(`  admin:   ${envAdminKey === undefined ? `${adminKey}   (generated; set ${config.admin.keyEnv} to choose one)` : `(from ${config.admin.keyEnv})`}`);
  console.log(`  try:     curl -s ${url}/v1/chat/completions -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\`);
  console.log(`             -d '{"model":"${models[0]}","messages":[{"role":"user","content":"hi"}]}'`);

  await untilSignal();
  await gateway.close();
  await Promise.all(sims.map((s) => s.close()));
  await stopTelemetry();
}

/** Two public demo adapters on the first model, so adapter routing can be tried at once; kept if already there. */
async function seedDevAdapters(store: ControlPlaneStore, baseModel: string): Promise<string[]> {
  const names = ['sql-lora', 'summarize-lora'];
  for (const name of names) {
    try {
      await store.registerAdapter({ name, baseModel, source: `/adapters/${name}` });
    } catch (err) {
      if (!(err instanceof ControlPlaneError && err.kind === 'conflict')) throw err;
    }
  }
  return names;
}

/**
 * The tenant "dev" and its key in the control-plane database. The key is env SWITCHYARD_API_KEY when set
 * (imported, hashed like any other), else a new one. A persistent data dir may already hold both.
 */
async function seedDevTenant(store: ControlPlaneStore, envKey: string | undefined): Promise<{ key: string; generated: boolean }> {
  try {
    await store.createTenant({ name: 'dev' });
  } catch (err) {
    if (!(err instanceof ControlPlaneError && err.kind === 'conflict')) throw err;
  }
  if (envKey !== undefined) {
    const existing = await store.findKeyByDigest(apiKeyDigest(envKey));
    if (existing === null) {
      try {
        await store.createApiKey('dev', { key: envKey });
      } catch (err) {
        if (err instanceof ControlPlaneError) usageError('dev', `SWITCHYARD_API_KEY: ${err.message}`);
        throw err;
      }
    } else if (existing.revoked || existing.expired || existing.tenantName !== 'dev') {
      throw new Error('SWITCHYARD_API_KEY is already registered in the database but revoked, expired or not the dev tenant\'s');
    }
    return { key: envKey, generated: false };
  }
  return { key: (await store.createApiKey('dev')).key, generated: true };
}
