#!/usr/bin/env node
import { ConfigError } from '../core/config.js';

const usage = `switchyard <command> [options]

Commands:
  dev    [--engines 4] [--port 8080] [--time-scale X] [--models a,b] [--config FILE]
         The gateway plus N simulated engines on loopback, embedded state. Prints the URL, models and API key.
  serve  --config switchyard.yaml
         The production gateway in front of the engines listed in the config.
  sim    --port P --model NAME [timing, cache, LoRA and fault flags; see 'switchyard sim --help']
         One simulated vLLM-compatible engine.
  admin  tenant|key|quota|model|adapter|usage ... [--url http://127.0.0.1:8080]
         Manages tenants, API keys, quotas and usage through a running gateway's admin API
         (admin key from env SWITCHYARD_ADMIN_KEY).
  sidecar --engine vllm|sglang|llamacpp|sim --engine-port P --port S [--register] -- ENGINE COMMAND...
         Runs next to an engine: supervises it, normalises its metrics, relays KV events and adapter calls,
         registers it in Redis for routers to discover.
  autoscaler --config autoscaler.yaml [--port P]
         Sizes engine fleets from KV-cache usage or queueing (scraped, or PromQL), through Kubernetes or local processes.
  replay --trace FILE --engines N --policy P1,P2,... [--rate-scale X] [--limit N] [--out DIR]
         Replays a Mooncake-format trace through the routing policies and the engine timing model, offline.

Run 'switchyard <command> --help' for a command's options.`;

type Command = (argv: string[]) => Promise<void>;

const commands: Record<string, () => Promise<Command>> = {
  dev: async () => (await import('./dev.js')).runDevCommand,
  serve: async () => (await import('./serve.js')).runServeCommand,
  sim: async () => (await import('./sim.js')).runSimCommand,
  replay: async () => (await import('./replay.js')).runReplayCommand,
  admin: async () => (await import('./admin.js')).runAdminCommand,
  sidecar: async () => (await import('./sidecar.js')).runSidecarCommand,
  autoscaler: async () => (await import('./autoscaler.js')).runAutoscalerCommand,
};

async function main(): Promise<void> {
  const [name, ...argv] = process.argv.slice(2);
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    console.log(usage);
    return;
  }
  const load = commands[name];
  if (load === undefined) {
    console.error(`switchyard: unknown command "${name}"\n\n${usage}`);
    process.exit(2);
  }
  await (await load())(argv);
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`switchyard: ${err.message}`);
    process.exit(1);
  }
  console.error(err);
  process.exit(1);
});
