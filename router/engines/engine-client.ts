import { Pool } from 'undici';
import type { EngineSpec } from '../../core/engine.js';

export interface EngineClientOptions {
  /** Most connections the inference pool opens to the engine. Default 128. */
  readonly connections?: number;
}

const DEFAULT_CONNECTIONS = 128;
// Engines behind uvicorn (vLLM, SGLang) close idle keep-alive sockets after 5 s. Giving a socket up first
// means we never write a request onto a socket the engine is closing, which would fail before the first byte.
const KEEP_ALIVE_TIMEOUT_MS = 4_000;

/**
 * Everything Switchyard says to one engine over HTTP.
 *
 * Inference goes through `pool`. Health probes and metric scrapes go through a separate two-connection pool:
 * with pipelining 1, a probe queued behind `connections` long-running streams would time out and make a
 * busy engine look dead.
 */
export class EngineClient {
  readonly spec: EngineSpec;
  /** Keep-alive pool for inference requests; the proxy dispatches on it. */
  readonly pool: Pool;
  readonly #control: Pool;

  constructor(spec: EngineSpec, opts: EngineClientOptions = {}) {
    const url = new URL(spec.url);
    // undici pools address an origin; a path prefix would be silently dropped from every request.
    if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
      throw new Error(`engine "${spec.id}": url must be an origin without a path, got "${spec.url}"`);
    }
    const connections = opts.connections ?? DEFAULT_CONNECTIONS;
    if (!Number.isInteger(connections) || connections < 1) {
      throw new Error(`engine "${spec.id}": connections must be a positive integer, got ${connections}`);
    }
    this.spec = spec;
    // pipelining 1: LLM responses take seconds, so a second request pipelined behind one would wait for it.
    this.pool = new Pool(url.origin, { connections, pipelining: 1, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS });
    this.#control = new Pool(url.origin, { connections: 2, pipelining: 1, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS });
  }

  /**
   * GET /health (the same path on vLLM, SGLang and llama.cpp). True on a 2xx within timeoutMs; false on any
   * other status (llama.cpp answers 503 while loading the model), a connection error or a timeout. Never throws.
   */
  async probeHealth(timeoutMs: number): Promise<boolean> {
    try {
      const res = await this.#control.request({ method: 'GET', path: '/health', signal: AbortSignal.timeout(timeoutMs) });
      await res.body.dump();
      return res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      return false;
    }
  }

  /** GET /metrics as text. Rejects on a non-2xx status, a connection error, or when timeoutMs elapses. */
  async scrapeMetrics(timeoutMs: number): Promise<string> {
    const res = await this.#control.request({ method: 'GET', path: '/metrics', signal: AbortSignal.timeout(timeoutMs) });
    if (res.statusCode < 200 || res.statusCode >= 300) {
      await res.body.dump();
      throw new Error(`engine "${this.spec.id}": GET /metrics answered ${res.statusCode}`);
    }
    return await res.body.text();
  }

  /** Closes both pools gracefully: requests already dispatched (streams included) run to completion. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), this.#control.close()]);
  }
}
