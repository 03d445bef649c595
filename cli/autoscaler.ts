import { Autoscaler, type AutoscalerLogger } from '../autoscaler/autoscaler.js';
import { loadAutoscalerConfig } from '../autoscaler/config.js';
import { createAutoscalerServer } from '../autoscaler/server.js';
import { buildTargets } from '../autoscaler/targets.js';
import { numberFlag, parseCommandArgs, untilSignal, usageError } from './args.js';

const help = `switchyard autoscaler --config autoscaler.yaml [--port 8081]

Scales each target of the config (a model's engine deployment) on its engines' metrics: KV-cache usage, waiting
or running requests (scraped from the engines or sidecars), or any PromQL expression (Prometheus HTTP API), with
Knative's KPA (stable + panic windows) or AIBrix's APA (tolerance band), through the Kubernetes scale
subresource or local replica processes.

  --config FILE   the autoscaler's YAML config (default env SWITCHYARD_AUTOSCALER_CONFIG)
  --port P        HTTP port of GET /metrics and GET /explain (default env PORT, else server.port, else 8081)

GET /explain says what each target decided last and why (JSON; text with ?format=text or Accept: text/plain).`;

export async function runAutoscalerCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs('autoscaler', help, { config: { type: 'string', short: 'c' }, port: { type: 'string' } }, argv);
  const path = flags.config ?? process.env.SWITCHYARD_AUTOSCALER_CONFIG;
  if (path === undefined) usageError('autoscaler', '--config is required', help);
  const port = flags.port === undefined ? undefined : numberFlag('autoscaler', 'port', flags.port, 0, (n) => Number.isInteger(n) && n >= 0 && n < 65536);
  const config = loadAutoscalerConfig({ path, env: port === undefined ? process.env : { ...process.env, PORT: String(port) } });

  const targets = buildTargets(config);
  // The loop logs through the server's pino logger (JSON lines, as the gateway's), which exists once the server does.
  let log: AutoscalerLogger | undefined;
  const autoscaler = new Autoscaler(targets, {
    intervalMs: config.intervalMs,
    decisionHistory: config.decisionHistory,
    logger: { info: (d, m) => log?.info(d, m), warn: (d, m) => log?.warn(d, m) },
  });
  const server = createAutoscalerServer(autoscaler, { host: config.server.host, port: config.server.port, logLevel: config.log.level });
  log = server.app.log;
  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    await autoscaler.close();
    throw err;
  }
  console.log(`switchyard autoscaler listening on ${url} (${targets.map((t) => `${t.name}: ${t.algorithm.kind} on ${t.metric}`).join('; ')})`);
  autoscaler.start();
  await untilSignal();
  await autoscaler.stop();
  await server.close();
  await autoscaler.close();
}
