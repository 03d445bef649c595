import { loadConfig, ConfigError } from '../core/config.js';
import { configKeyResolver } from '../router/auth.js';
import { createGateway } from '../router/server.js';
import { startTelemetry } from '../router/tracing.js';
import { parseCommandArgs, untilSignal, usageError } from './args.js';

const help = `switchyard serve --config switchyard.yaml

The production gateway: OpenAI-compatible API in front of the engines listed in the config, and those that
sidecars register in Redis (discovery.registry) or Kubernetes EndpointSlices show (discovery.kubernetes).
The config path may also come from env SWITCHYARD_CONFIG. Env PORT overrides server.port.
Control plane: database.url (env DATABASE_URL) or embedded PGlite (database.dataDir, else in memory).
Admin API under /admin/ when env SWITCHYARD_ADMIN_KEY (admin.keyEnv) is set.`;

export async function runServeCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs('serve', help, { config: { type: 'string', short: 'c' } }, argv);
  const path = flags.config ?? process.env.SWITCHYARD_CONFIG;
  if (path === undefined) usageError('serve', '--config is required', help);
  const config = loadConfig({ path });
  if (config.engines.length === 0 && !config.discovery.registry.enabled && !config.discovery.kubernetes.enabled) {
    throw new ConfigError(path, ['engines: list at least one engine to serve, or discover them (discovery.registry or discovery.kubernetes)']);
  }
  let resolver;
  try {
    resolver = configKeyResolver(config.auth.keys);
  } catch (err) {
    throw new ConfigError(path, [(err as Error).message]);
  }
  const stopTelemetry = await startTelemetry();
  // API keys come from auth.keys and from the control-plane database (managed with `switchyard admin`).
  const gateway = await createGateway({ config, resolver, adminKey: process.env[config.admin.keyEnv] });
  const url = await gateway.listen();
  console.log(`switchyard gateway listening on ${url}`);
  await untilSignal();
  await gateway.close();
  await stopTelemetry();
}
