import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../core/config.js';
import type { EngineSpec } from '../core/engine.js';
import { startSim, type RunningSim } from '../engine-sim/server.js';
import { apiKeyDigest, ControlPlaneError, type ControlPlaneStore } from '../core/db/control-plane-store.js';
import { configKeyResolver } from '../router/auth.js';
import { createGateway, type Gateway } from '../router/server.js';
import { createActuator } from '../autoscaler/actuators/index.js';
import { Autoscaler } from '../autoscaler/autoscaler.js';
import { AutoscalerConfigSchema } from '../autoscaler/config.js';
import { buildTargets } from '../autoscaler/targets.js';
import { startTelemetry } from '../router/tracing.js';
import { numberFlag, parseCommandArgs, untilSignal, usageError } from './args.js';

const help = `switchyard dev [--engines 4] [--port 8080] [--time-scale X] [--models a,b] [--config FILE] [--autoscale]

The gateway plus N simulated vLLM engines, each its own server on a loopback port, with embedded state.
  --engines N      simulated engines (default 4)
  --port P         gateway port (default env PORT, else 8080)
  --time-scale X   run the engines' clocks X times faster than real time (default 1)
  --models a,b     models to serve, assigned to the engines in turn (default llama-3.1-8b-instruct)
  --config FILE    a switchyard.yaml whose settings apply on top (its engines are ignored)
  --autoscale      the engines are processes an in-process autoscaler starts and stops (1 to --engines, KPA on
                   requests running per engine, target 8), on ports from PORT + 1000 (any free ones with --port 0);
                   first model only
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
      autoscale: { type: 'boolean' },
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
  const autoscale = flags.autoscale === true;
  for (let i = 0; i < (autoscale ? 0 : engineCount); i++) {
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
  const scaler = autoscale ? await startDevAutoscaler(gateway, models[0]!, engineCount, timeScale, config.server.port) : undefined;
  const url = await gateway.listen();

  console.log(`switchyard dev: gateway on ${url} with ${autoscale ? `1 to ${engineCount} autoscaled` : engineCount} simulated engine(s)`);
  console.log(`  models:  ${models.join(', ')}`);
  console.log(`  adapters: ${adapters.join(', ')}   (LoRA on ${models[0]}, loaded on an engine at first use)`);
  console.log(`  API key: ${keyWasGenerated ? `${apiKey}   (generated; set SWITCHYARD_API_KEY to choose one)` : '(from SWITCHYARD_API_KEY)'}`);
  console.log(`  admin:   ${envAdminKey === undefined ? `${adminKey}   (generated; set ${config.admin.keyEnv} to choose one)` : `(from ${config.admin.keyEnv})`}`);
  console.log(`  try:     curl -s ${url}/v1/chat/completions -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\`);
  console.log(`             -d '{"model":"${models[0]}","messages":[{"role":"user","content":"hi"}]}'`);

  await untilSignal();
  await scaler?.close();
  await gateway.close();
  await Promise.all(sims.map((s) => s.close()));
  await stopTelemetry();
}

/**
 * `--autoscale`: simulated engines as processes that an autoscaler in this process starts and stops from the
 * engines' own load (requests running per engine, KPA), fed to the gateway as they come and go.
 */
async function startDevAutoscaler(gateway: Gateway, model: string, maxEngines: number, timeScale: number, gatewayPort: number): Promise<{ close(): Promise<void> }> {
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  const cfg = AutoscalerConfigSchema.parse({
    intervalMs: 1000,
    targets: [
      {
        name: model,
        metric: 'running_requests',
        targetValue: 8,
        minReplicas: 1,
        maxReplicas: maxEngines,
        algorithm: 'kpa',
        kpa: { stableWindowMs: 30_000, panicWindowMs: 3_000, scaleDownDelayMs: 30_000 },
        // No URLs: the local actuator's replicas are scraped.
        source: { type: 'scrape', urls: [] },
        actuator: {
          kind: 'local',
          command: [process.execPath, cli, 'sim', '--port', '{enginePort}', '--model', model, '--time-scale', String(timeScale), '--seed', '{index}'],
          basePort: gatewayPort === 0 ? await freePort() : gatewayPort + 1000,
          output: 'ignore',
        },
      },
    ],
  });
  const targets = buildTargets(cfg, {
    createActuator: (a) =>
      createActuator(a, {
        onChange: (replicas) =>
          gateway.setEngines(
            'autoscaler',
            replicas.map((r) => ({ id: `sim-${r.index}`, url: r.url, kind: 'vllm', models: [model], labels: { pool: 'default' } })),
          ),
      }),
  });
  const autoscaler = new Autoscaler(targets, { intervalMs: cfg.intervalMs });
  autoscaler.start();
  return { close: () => autoscaler.close() };
}

/** A port free now, from which the autoscaled engines count up (two ports each). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
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
