import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { isSidecarEngineKind, SIDECAR_ENGINE_KINDS } from '../engine-sidecar/engine-kind.js';
import { REGISTRATION_DEFAULTS } from '../engine-sidecar/registration.js';
import { SIDECAR_DEFAULTS, startSidecar, type SidecarOptions } from '../engine-sidecar/sidecar.js';
import { SUPERVISOR_DEFAULTS } from '../engine-sidecar/supervisor.js';
import { numberFlag, parseCommandArgs, usageError } from './args.js';

const help = `switchyard sidecar --engine KIND --engine-port P [--port S] [options] [-- ENGINE-COMMAND [ARGS...]]

Runs next to one engine: starts the engine command, health-checks it (GET /health on the engine port) and restarts
it with backoff when it dies; serves its metrics under switchyard_engine_* names; translates the adapter API;
relays its KV events; registers it in Redis. On SIGTERM it drains: deregisters, waits for the engine's running and
waiting requests to finish (or the grace period), stops the engine, exits 0. Exits 1 when the engine keeps dying.
Without an engine command it attaches to an engine run by something else (e.g. its own container): the same,
but it starts, restarts and stops nothing.
Prints "switchyard sidecar listening on URL engine=URL id=ID" once its API is up.

HTTP: GET /healthz, /readyz (engine healthy and not draining), /sidecar/status, /metrics;
POST /v1/lora_adapter/load {lora_name, lora_path}, /v1/lora_adapter/unload {lora_name}; GET /v1/lora_adapters.

  --engine KIND                  ${SIDECAR_ENGINE_KINDS.join(' | ')} (sim: the simulator, vLLM's API and metrics)
  --engine-port P                the engine's HTTP port (required)
  --engine-host H                where the sidecar reaches the engine (default ${SIDECAR_DEFAULTS.engineHost})
  --port S                       the sidecar's HTTP port, 0 for any free one (default ${SIDECAR_DEFAULTS.port})
  --host H                       address the sidecar binds (default ${SIDECAR_DEFAULTS.host})

Registration (Redis engine registry, read by routers):
  --register                     register the engine once healthy; needs --redis or env REDIS_URL
  --redis URL                    default env REDIS_URL
  --registry-prefix P            key prefix (default switchyard:registry:)
  --id ID                        engine id (default HOSTNAME-ENGINEPORT)
  --advertise-host H             host routers reach this pod at (default env POD_IP, else the hostname)
  --label K=V                    engine label, repeatable (pool=NAME names the compute pool)
  --kv-capacity-tokens N         the engine's KV-cache capacity in tokens
  --ttl-ms MS                    record TTL; heartbeat every third of it (default ${REGISTRATION_DEFAULTS.ttlMs})

KV events:
  --kv-events EP                 the engine's KV events PUB endpoint (e.g. tcp://127.0.0.1:5557): relay them
  --kv-events-publish EP         where the relay binds (default ${SIDECAR_DEFAULTS.kvEventsPublish}; port * for any)

Supervision and drain:
  --drain-timeout-ms MS          grace period for in-flight requests on SIGTERM (default ${SIDECAR_DEFAULTS.drainTimeoutMs})
  --stop-timeout-ms MS           SIGTERM to SIGKILL of the engine (default ${SUPERVISOR_DEFAULTS.stopTimeoutMs})
  --health-interval-ms MS        engine health check period (default ${SUPERVISOR_DEFAULTS.healthIntervalMs})
  --startup-timeout-ms MS        spawn to first healthy check before the engine is killed (default ${SUPERVISOR_DEFAULTS.startupTimeoutMs})
  --unhealthy-restart-ms MS      kill an engine unhealthy this long, 0 never (default ${SUPERVISOR_DEFAULTS.unhealthyRestartMs})
  --restart-backoff-ms MS        first restart delay, doubled per consecutive crash (default ${SUPERVISOR_DEFAULTS.restartBackoffMs})
  --restart-backoff-max-ms MS    (default ${SUPERVISOR_DEFAULTS.restartBackoffMaxMs})
  --max-restarts N               consecutive restarts before giving up (default ${SUPERVISOR_DEFAULTS.maxRestarts})

Example:
  switchyard sidecar --engine vllm --engine-port 8000 --port 8090 --register --label pool=a100 \\
    --kv-events tcp://127.0.0.1:5557 -- vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000`;

const nonNegative = (n: number) => n >= 0;
const positive = (n: number) => n > 0;
const isPort = (n: number) => Number.isInteger(n) && n >= 0 && n < 65536;

export async function runSidecarCommand(argv: string[]): Promise<void> {
  const split = argv.indexOf('--');
  const own = split === -1 ? argv : argv.slice(0, split);
  const engineArgv = split === -1 ? [] : argv.slice(split + 1);
  const flags = parseCommandArgs(
    'sidecar',
    help,
    {
      engine: { type: 'string' },
      'engine-port': { type: 'string' },
      'engine-host': { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      register: { type: 'boolean' },
      redis: { type: 'string' },
      'registry-prefix': { type: 'string' },
      id: { type: 'string' },
      'advertise-host': { type: 'string' },
      label: { type: 'string', multiple: true },
      'kv-capacity-tokens': { type: 'string' },
      'ttl-ms': { type: 'string' },
      'kv-events': { type: 'string' },
      'kv-events-publish': { type: 'string' },
      'drain-timeout-ms': { type: 'string' },
      'stop-timeout-ms': { type: 'string' },
      'health-interval-ms': { type: 'string' },
      'startup-timeout-ms': { type: 'string' },
      'unhealthy-restart-ms': { type: 'string' },
      'restart-backoff-ms': { type: 'string' },
      'restart-backoff-max-ms': { type: 'string' },
      'max-restarts': { type: 'string' },
    },
    own,
  );
  const optional = (flag: keyof typeof flags, check: (n: number) => boolean): number | undefined => {
    const value = flags[flag];
    return typeof value === 'string' ? numberFlag('sidecar', flag, value, 0, check) : undefined;
  };

  const engine = flags.engine;
  if (engine === undefined) usageError('sidecar', '--engine KIND is required', help);
  if (!isSidecarEngineKind(engine)) usageError('sidecar', `--engine ${JSON.stringify(engine)} is not valid (${SIDECAR_ENGINE_KINDS.join(', ')})`, help);
  const enginePort = optional('engine-port', (n) => isPort(n) && n > 0);
  if (enginePort === undefined) usageError('sidecar', '--engine-port P is required', help);
  const [command, ...args] = engineArgv;
  if (split !== -1 && (command === undefined || command === '')) usageError('sidecar', 'nothing after --: give the engine command, or leave out -- to attach to a running engine', help);

  const labels: Record<string, string> = {};
  for (const label of flags.label ?? []) {
    const eq = label.indexOf('=');
    if (eq <= 0) usageError('sidecar', `--label ${JSON.stringify(label)} is not K=V`);
    labels[label.slice(0, eq)] = label.slice(eq + 1);
  }
  const redisUrl = flags.redis ?? process.env.REDIS_URL;
  if (flags.register === true && (redisUrl === undefined || redisUrl === '')) usageError('sidecar', '--register needs --redis URL or env REDIS_URL');
  for (const flag of ['kv-events', 'kv-events-publish'] as const) {
    const value = flags[flag];
    if (value !== undefined && !/^(tcp|ipc):\/\/./.test(value)) usageError('sidecar', `--${flag} ${JSON.stringify(value)} is not a ZMQ endpoint (tcp://HOST:PORT)`);
  }
  const ttlMs = optional('ttl-ms', (n) => Number.isInteger(n) && n >= 100);

  const options: SidecarOptions = {
    engine,
    enginePort,
    engineHost: flags['engine-host'],
    command,
    args,
    host: flags.host,
    port: optional('port', isPort),
    id: flags.id,
    advertiseHost: flags['advertise-host'],
    labels,
    kvCapacityTokens: optional('kv-capacity-tokens', (n) => Number.isInteger(n) && n > 0),
    register: flags.register === true,
    redisUrl,
    registryPrefix: flags['registry-prefix'],
    ttlMs,
    kvEvents: flags['kv-events'],
    kvEventsPublish: flags['kv-events-publish'],
    drainTimeoutMs: optional('drain-timeout-ms', nonNegative),
    supervisor: {
      stopTimeoutMs: optional('stop-timeout-ms', nonNegative),
      healthIntervalMs: optional('health-interval-ms', positive),
      startupTimeoutMs: optional('startup-timeout-ms', nonNegative),
      unhealthyRestartMs: optional('unhealthy-restart-ms', nonNegative),
      restartBackoffMs: optional('restart-backoff-ms', nonNegative),
      restartBackoffMaxMs: optional('restart-backoff-max-ms', nonNegative),
      maxRestarts: optional('max-restarts', (n) => Number.isInteger(n) && n >= 0),
    },
  };

  // Installed before the engine starts, so a SIGTERM at any moment drains rather than killing the process.
  let stopRequested: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
    stopRequested = signal;
  };
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);

  const sidecar = await startSidecar(options);
  console.log(`switchyard sidecar listening on ${sidecar.url} engine=${sidecar.engineUrl} id=${sidecar.id}${sidecar.kvEventsEndpoint === undefined ? '' : ` kv-events=${sidecar.kvEventsEndpoint}`}`);
  let draining = false;
  onSignal = (signal) => {
    if (draining) return;
    draining = true;
    console.error(`switchyard sidecar: ${signal}: draining`);
    void sidecar.drain();
  };
  if (stopRequested !== undefined) onSignal(stopRequested);
  const code = await sidecar.done;
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  process.exit(code);
}

/** True when this module is the script node was started with (node dist/cli/sidecar.js ...). */
function runDirectly(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(entry)).href;
  } catch {
    return false;
  }
}

if (runDirectly()) {
  runSidecarCommand(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
