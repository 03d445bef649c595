import { trace, type Tracer } from '@opentelemetry/api';

/**
 * Spans are always created through the OpenTelemetry API; without an SDK they are no-ops that cost almost
 * nothing. The SDK (and its OTLP exporter) starts only when the standard endpoint variable asks for it.
 */
export const tracer: Tracer = trace.getTracer('switchyard');

export async function startTelemetry(env: NodeJS.ProcessEnv = process.env): Promise<() => Promise<void>> {
  const endpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (endpoint === undefined || endpoint === '') return async () => {};
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({ serviceName: env.OTEL_SERVICE_NAME ?? 'switchyard' });
  sdk.start();
  return () => sdk.shutdown();
}
