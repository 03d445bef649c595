import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What one path answers; tests change it while the server runs. */
export interface Route {
  status?: number;
  body: string;
  contentType?: string;
  /** Answer after this long (to test timeouts). */
  delayMs?: number;
}

export interface TextServer {
  readonly url: string;
  readonly routes: Map<string, Route | ((req: IncomingMessage, url: URL) => Route)>;
  /** Every request's path and query, in order. */
  readonly requests: URL[];
  close(): Promise<void>;
}

/** A tiny HTTP server on 127.0.0.1:0 answering canned bodies by path (404 for others). */
export async function startTextServer(routes: Record<string, Route | ((req: IncomingMessage, url: URL) => Route)> = {}): Promise<TextServer> {
  const table = new Map(Object.entries(routes));
  const requests: URL[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    requests.push(url);
    const entry = table.get(url.pathname);
    const route = typeof entry === 'function' ? entry(req, url) : entry;
    const send = () => {
      if (route === undefined) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      res.writeHead(route.status ?? 200, { 'content-type': route.contentType ?? 'text/plain; version=0.0.4' }).end(route.body);
    };
    if (route?.delayMs !== undefined) setTimeout(send, route.delayMs);
    else send();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    routes: table,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function vllmText(kv: number, waiting: number, running: number): string {
  return [
    '# HELP vllm:num_requests_running Number of requests in model execution batches.',
    '# TYPE vllm:num_requests_running gauge',
    `vllm:num_requests_running{engine="0",model_name="llama"} ${running}`,
    '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.',
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting{engine="0",model_name="llama"} ${waiting}`,
    '# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.',
    '# TYPE vllm:kv_cache_usage_perc gauge',
    `vllm:kv_cache_usage_perc{engine="0",model_name="llama"} ${kv}`,
    '',
  ].join('\n');
}
