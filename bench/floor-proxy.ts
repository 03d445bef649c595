import Fastify from 'fastify';
import { Pool } from 'undici';
import { parseArgs } from 'node:util';

/**
 * The floor the gateway's proxy overhead is measured against: the least a Fastify + undici reverse proxy can do
 * for POST /v1/chat/completions. No auth, no validation, no routing, no metrics, no logs; the body is forwarded
 * as received and the answer piped back, streams included.
 *
 *   node dist/bench/floor-proxy.js --upstream http://127.0.0.1:8001 [--port 0]
 */

const { values } = parseArgs({ options: { upstream: { type: 'string' }, port: { type: 'string', default: '0' } } });
if (values.upstream === undefined) {
  console.error('floor-proxy: --upstream URL is required');
  process.exit(2);
}

// Same keep-alive pool size as the gateway's default (upstream.connections), so neither is starved of sockets.
const pool = new Pool(values.upstream, { connections: 256 });
const app = Fastify({ logger: false });

// Buffered, not streamed: the gateway must read the whole body to route it, so the floor does that much too.
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

app.post('/v1/chat/completions', async (request, reply) => {
  const upstream = await pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json' },
    body: request.body as Buffer,
  });
  reply.code(upstream.statusCode);
  for (const name of ['content-type', 'content-length']) {
    const value = upstream.headers[name];
    if (typeof value === 'string') reply.header(name, value);
  }
  return reply.send(upstream.body);
});

const url = await app.listen({ host: '127.0.0.1', port: Number(values.port) });
console.log(`floor proxy listening on ${url}`);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void app.close().then(() => pool.close());
  });
}
