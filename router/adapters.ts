import { setTimeout as sleep } from 'node:timers/promises';
import type { Adapter } from '../core/db/control-plane-store.js';
import { ApiError } from '../core/errors.js';
import type { AdapterStateStore } from '../core/state/adapter-state.js';
import { modelNotFound } from './admission.js';
import type { Principal } from './auth.js';
import type { EngineRegistry } from './engines/registry.js';

/**
 * The router's side of LoRA adapters: which registered adapter a request names and whether its caller may see it,
 * where the adapter is resident (from the shared adapter state, read at most every `refreshMs`), and a cold start
 * when it is resident nowhere: one load for all the requests that wait for it, across replicas (claimLoad).
 */
export interface AdapterRouterOptions {
  /** The registry (the control-plane database). */
  readonly listAdapters: () => Promise<Adapter[]>;
  readonly state: AdapterStateStore;
  readonly registry: EngineRegistry;
  /** Loads the adapter on the engine and records it in the shared state (the controller's load path). */
  readonly load: (adapter: string, engine: string) => Promise<void>;
  /** Who this replica is, for claimLoad. */
  readonly holder: string;
  /** How long the registry is cached; bus invalidations drop it sooner. */
  readonly catalogTtlMs: number;
  /** How stale the residency map may be. */
  readonly refreshMs: number;
  readonly onColdStart?: (adapter: string, waitedMs: number, outcome: 'loaded' | 'timeout' | 'failed') => void;
}

export interface ResolvedAdapter {
  readonly name: string;
  readonly baseModel: string;
}

const claimTtlMs = 60_000;
const pollMs = 50;

export class AdapterRouter {
  readonly #opts: AdapterRouterOptions;
  #catalog: Promise<Map<string, Adapter>> | undefined;
  #catalogAt = 0;
  #resident: Map<string, Set<string>> = new Map();
  #residentAt = -Infinity;
  #refreshing: Promise<void> | undefined;
  /** This replica's cold starts in progress, one per adapter. */
  readonly #coldStarts = new Map<string, Promise<void>>();

  constructor(opts: AdapterRouterOptions) {
    this.#opts = opts;
  }

  /** Adapters resident per engine, as last read (for a gauge). */
  residentPerEngine(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const engines of this.#resident.values()) for (const e of engines) counts.set(e, (counts.get(e) ?? 0) + 1);
    return counts;
  }

  /** Drops the cached registry (an admin change). */
  invalidate(): void {
    this.#catalog = undefined;
  }

  /**
   * The adapter `model` names, if it is one the principal may use; undefined when `model` is no registered adapter.
   * Another tenant's private adapter is a 404, as if it did not exist. Config keys (no tenant) see every adapter.
   */
  async resolve(model: string, principal: Principal): Promise<ResolvedAdapter | undefined> {
    const adapter = (await this.#adapters()).get(model);
    if (adapter === undefined) return undefined;
    if (!visible(adapter, principal)) throw modelNotFound(model);
    return { name: adapter.name, baseModel: adapter.baseModel };
  }

  /** Adapters the principal may use, for /v1/models. */
  async visibleTo(principal: Principal): Promise<Adapter[]> {
    return [...(await this.#adapters()).values()].filter((a) => visible(a, principal));
  }

  /**
   * The engines where the adapter is resident, loading it first when it is resident nowhere; waits at most until
   * `deadline` (performance.now() clock). Counts the request's demand for the controller.
   */
  async residentOn(adapter: ResolvedAdapter, deadline: number, signal: AbortSignal): Promise<ReadonlySet<string>> {
    this.#countDemand(adapter.name);
    await this.#refresh(false);
    let engines = this.#resident.get(adapter.name);
    if (engines !== undefined && engines.size > 0) return engines;
    const started = performance.now();
    let cold = this.#coldStarts.get(adapter.name);
    if (cold === undefined) {
      // Shared by every request waiting for this adapter: none of their aborts may stop it for the others.
      cold = this.#coldStart(adapter, deadline).finally(() => this.#coldStarts.delete(adapter.name));
      // Every waiter may have given up by the time it fails: its failure is theirs to report, never unhandled.
      cold.catch(() => {});
      this.#coldStarts.set(adapter.name, cold);
    }
    try {
      await untilDoneOrAborted(cold, signal);
    } catch (err) {
      this.#opts.onColdStart?.(adapter.name, performance.now() - started, err instanceof ApiError && err.status === 504 ? 'timeout' : 'failed');
      throw err;
    }
    engines = this.#resident.get(adapter.name);
    this.#opts.onColdStart?.(adapter.name, performance.now() - started, 'loaded');
    return engines ?? new Set();
  }

  async #coldStart(adapter: ResolvedAdapter, deadline: number): Promise<void> {
    const { state, holder } = this.#opts;
    let lastError: unknown;
    while (performance.now() < deadline) {
      if (await state.claimLoad(adapter.name, holder, claimTtlMs)) {
        try {
          lastError = await this.#loadSomewhere(adapter);
        } finally {
          await state.releaseLoad(adapter.name, holder).catch(() => {});
        }
      }
      await this.#refresh(true);
      if ((this.#resident.get(adapter.name)?.size ?? 0) > 0) return;
      // Another replica is loading it, or every engine is full of adapters too recently loaded to unload: wait.
      await sleep(lastError === undefined ? pollMs : 4 * pollMs);
    }
    const why = lastError === undefined ? '' : `: ${(lastError as Error).message ?? String(lastError)}`;
    throw new ApiError(504, `adapter \`${adapter.name}\` could not be loaded within the request's time-to-first-token limit${why}`, {
      type: 'timeout_error',
      code: 'adapter_load_timeout',
    });
  }

  /**
   * Loads the adapter on the first engine of its base model that takes it, fewest adapters first (loading ones
   * count), then fewest requests in flight; the controller unloads an idle adapter when an engine is full.
   * Returns the last engine's error when none took it, undefined on success.
   */
  async #loadSomewhere(adapter: ResolvedAdapter): Promise<unknown> {
    const occupancy = new Map<string, number>();
    for (const p of await this.#opts.state.placements()) if (p.state !== 'failed') occupancy.set(p.engine, (occupancy.get(p.engine) ?? 0) + 1);
    const candidates = this.#opts.registry
      .snapshot()
      .filter((e) => e.healthy && e.spec.models.includes(adapter.baseModel))
      .map((e) => ({ id: e.spec.id, adapters: occupancy.get(e.spec.id) ?? 0, inFlight: e.inFlight }))
      .sort((a, b) => a.adapters - b.adapters || a.inFlight - b.inFlight || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (candidates.length === 0) return new Error(`no healthy engine serves ${adapter.baseModel}`);
    let lastError: unknown;
    for (const c of candidates) {
      try {
        await this.#opts.load(adapter.name, c.id);
        return undefined;
      } catch (err) {
        lastError = err;
      }
    }
    return lastError;
  }

  #countDemand(adapter: string): void {
    this.#opts.state.recordDemand(adapter).catch(() => {});
  }

  async #adapters(): Promise<Map<string, Adapter>> {
    const now = performance.now();
    if (this.#catalog === undefined || now - this.#catalogAt > this.#opts.catalogTtlMs) {
      this.#catalogAt = now;
      const loading = this.#opts.listAdapters().then((list) => new Map(list.map((a) => [a.name, a])));
      this.#catalog = loading;
      loading.catch(() => {
        if (this.#catalog === loading) this.#catalog = undefined;
      });
    }
    try {
      return await this.#catalog;
    } catch (err) {
      throw new ApiError(503, 'the control-plane database is unavailable; retry shortly', { code: 'control_plane_unavailable', cause: err });
    }
  }

  async #refresh(force: boolean): Promise<void> {
    if (!force && performance.now() - this.#residentAt < this.#opts.refreshMs) return;
    this.#refreshing ??= this.#opts.state
      .placements()
      .then((placements) => {
        const resident = new Map<string, Set<string>>();
        for (const p of placements) {
          if (p.state !== 'resident') continue;
          let engines = resident.get(p.adapter);
          if (engines === undefined) resident.set(p.adapter, (engines = new Set()));
          engines.add(p.engine);
        }
        this.#resident = resident;
        this.#residentAt = performance.now();
      })
      .catch(() => {
        // The shared state is unreachable: route on what was last known.
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
    await this.#refreshing;
  }
}

/** Waits for `work`, or rejects with the signal's reason as soon as this caller gives up (the work goes on). */
function untilDoneOrAborted(work: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function visible(adapter: Adapter, principal: Principal): boolean {
  const tenant = principal.tenant;
  return tenant === undefined || adapter.tenantId === null || adapter.tenantId === tenant.id;
}
