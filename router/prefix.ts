import type { FastifyBaseLogger } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import { kvBlockSize, type Config } from '../core/config.js';
import type { EngineSpec } from '../core/engine.js';
import { blockNamespace } from '../kvcache/block-hash.js';
import { createKvEventMetrics } from '../kvcache/events/metrics.js';
import { subscribeKvEvents, type KvEventSubscription } from '../kvcache/events/subscriber.js';
import { createPrefixIndex } from '../kvcache/index/create.js';
import { requestBlockHashes, type PromptRequest } from '../kvcache/request-blocks.js';
import { createTokenizer, type Tokenizer } from '../kvcache/tokenizers/tokenizer.js';
import type { BlockHash, PrefixIndex, PrefixMatches } from '../kvcache/types.js';

export interface PromptPrefix {
  readonly hashes: readonly BlockHash[];
  /** The canonical prompt's length in tokens, the incomplete tail block included. */
  readonly promptTokens: number;
  readonly matches: PrefixMatches;
}

const noMatches: PrefixMatches = new Map();

/**
 * The gateway's side of the KV-cache index: a prompt's blocks and who holds them before routing, the chosen
 * engine recorded after. Index failures never fail a request: routing goes on without prefix information.
 */
export class PrefixTracker {
  readonly #index: PrefixIndex;
  readonly #tokenizer: Tokenizer;
  readonly #config: Config['kvcache'];
  readonly #blockSize: number;
  readonly #log: FastifyBaseLogger;
  readonly #lookupErrors: Counter;
  readonly #subscriptions = new Map<string, KvEventSubscription>();
  readonly #eventMetrics;

  private constructor(config: Config, tokenizer: Tokenizer, registry: Registry, log: FastifyBaseLogger) {
    this.#config = config.kvcache;
    this.#blockSize = kvBlockSize(config.kvcache);
    this.#tokenizer = tokenizer;
    this.#log = log;
    this.#index = createPrefixIndex({
      redisUrl: config.redis.url,
      maxEntries: config.kvcache.maxEntries,
      maxBytes: config.kvcache.maxBytes,
      keyPrefix: config.kvcache.redisKeyPrefix,
      logger: log,
    });
    this.#lookupErrors = new Counter({
      name: 'switchyard_prefix_lookup_errors_total',
      help: 'Prompts that could not be hashed or looked up; those requests were routed without prefix information',
      registers: [registry],
    });
    this.#eventMetrics = createKvEventMetrics(registry);
  }

  static async create(config: Config, registry: Registry, log: FastifyBaseLogger): Promise<PrefixTracker> {
    return new PrefixTracker(config, await createTokenizer(config.kvcache.tokenizer), registry, log);
  }

  /**
   * The prompt's full blocks and, per engine, how many leading ones it holds; undefined when the prompt cannot be
   * hashed (token ids the engine's hash does not take), and the request is then routed on load alone.
   */
  /** `model` is the name the client used: an adapter's name keeps its prefixes apart from its base model's. */
  async lookup(body: PromptRequest, model: string, adapter?: string): Promise<PromptPrefix | undefined> {
    let hashes: BlockHash[];
    let promptTokens: number;
    try {
      ({ hashes, promptTokens } = await requestBlockHashes(body, {
        tokenizer: this.#tokenizer,
        blockSize: this.#blockSize,
        namespace: blockNamespace(model),
        hashing: this.#config.hashing,
        // vLLM mixes the adapter's name into its block hashes: the same prompt under two adapters is two blocks.
        loraName: adapter,
      }));
    } catch (err) {
      this.#lookupErrors.inc();
      this.#log.warn({ err: (err as Error).message }, 'prompt could not be hashed; routing without prefix information');
      return undefined;
    }
    if (hashes.length === 0) return { hashes, promptTokens, matches: noMatches };
    try {
      return { hashes, promptTokens, matches: await this.#index.match(hashes) };
    } catch (err) {
      this.#lookupErrors.inc();
      this.#log.warn({ err }, 'prefix index lookup failed; routing without prefix information');
      return { hashes, promptTokens, matches: noMatches };
    }
  }

  /** The engine is about to hold the prompt's blocks: recorded now, so the next request sharing them follows. */
  recordStored(engineId: string, hashes: readonly BlockHash[]): void {
    if (hashes.length > 0) this.#index.recordStored(engineId, hashes);
  }

  /** The engine does not hold these blocks after all (its request failed, or its answer said so). */
  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void {
    if (hashes.length > 0) this.#index.recordRemoved(engineId, hashes);
  }

  fill(engineId: string): number {
    return this.#index.fill(engineId);
  }

  /**
   * The engine restarted: its cache is empty, whatever the index was told. Its KV event subscription stays: ZMQ
   * reconnects to the new process by itself.
   */
  forgetEngine(engineId: string): void {
    this.#index.clearEngine(engineId);
  }

  /** Capacities and KV event subscriptions follow the fleet; a removed engine's blocks are forgotten. */
  setEngines(engines: readonly EngineSpec[]): void {
    const ids = new Set(engines.map((e) => e.id));
    for (const [id, sub] of this.#subscriptions) {
      if (ids.has(id)) continue;
      void sub.close();
      this.#subscriptions.delete(id);
      this.#index.clearEngine(id);
    }
    for (const e of engines) {
      if (e.kvCapacityTokens !== undefined) this.#index.setCapacity(e.id, Math.floor(e.kvCapacityTokens / this.#blockSize));
      if (e.kvEventsEndpoint === undefined || this.#subscriptions.has(e.id)) continue;
      this.#subscriptions.set(
        e.id,
        subscribeKvEvents({
          endpoint: e.kvEventsEndpoint,
          engineId: e.id,
          index: this.#index,
          metrics: this.#eventMetrics,
          onError: (err) => this.#log.warn({ engine: e.id, err: err.message }, 'kv events'),
        }),
      );
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.#subscriptions.values()].map((s) => s.close()));
    this.#subscriptions.clear();
    await this.#index.close();
  }
}
