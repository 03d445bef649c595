/**
 * The autoscaler's HTTP side: GET /metrics (Prometheus text of its registry), GET /explain (JSON, or words with
 * `Accept: text/plain` or `?format=text`), GET /healthz.
 */

import Fastify, { type FastifyInstance } from 'fastify';
import type { Autoscaler } from './autoscaler.js';

export interface AutoscalerServerOptions {
  readonly host?: string;
  /** 0: any free port. */
  readonly port?: number;
  /** pino level; default 'info'. */
  readonly logLevel?: string;
}

export interface AutoscalerServer {
  readonly app: FastifyInstance;
  /** Resolves to the base URL, e.g. http://127.0.0.1:8081. */
  listen(): Promise<string>;
  close(): Promise<void>;
}

export function createAutoscalerServer(autoscaler: Autoscaler, opts: AutoscalerServerOptions = {}): AutoscalerServer {
  const app = Fastify({ logger: { level: opts.logLevel ?? 'info' } });

  app.get('/metrics', async (_req, reply) => {
    const text = await autoscaler.registry.metrics();
    return reply.type(autoscaler.registry.contentType).send(text);
  });

  app.get<{ Querystring: { format?: string } }>('/explain', async (req, reply) => {
    const format = req.query.format;
    const wantsText = format === 'text' || (format === undefined && prefersText(req.headers.accept));
    if (wantsText) return reply.type('text/plain; charset=utf-8').send(autoscaler.explainText());
    return reply.send(autoscaler.explain());
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  return {
    app,
    async listen() {
      return app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
    },
    async close() {
      await app.close();
    },
  };
}

/** text/plain named before (or instead of) application/json. */
function prefersText(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  const text = accept.indexOf('text/plain');
  if (text === -1) return false;
  const json = accept.indexOf('application/json');
  return json === -1 || text < json;
}
