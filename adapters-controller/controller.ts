/**
 * The adapters controller: keeps LoRA adapters resident where desiredPlacement() says, through the engines' APIs.
 *
 * Every gateway replica may run one; only the holder of the store's lease acts, so two never load or unload at
 * once, and a dead one is replaced within leaseTtlMs. Each round (every intervalMs, and on nudge()):
 *   1. lease: acquireLease(holderId, leaseTtlMs), renewed every leaseTtlMs / 3 while the round runs; without it,
 *      the round does nothing (other replicas keep trying, so one takes over once the holder stops renewing);
 *   2. observe: read the store's placements, then list the adapters of every healthy engine (GET /v1/models) and
 *      write the store to match what the engines report. Adapters an engine lists are resident; ones the store
 *      has resident or unloading there but the engine no longer lists are removed (the engine restarted, or
 *      someone unloaded them), and so get placed again; loading placements stay while their load runs in this
 *      process or is younger than staleLoadingMs (another replica's cold start), and go after that; failed ones
 *      are kept failedTtlMs for whoever reads the store. Placements of engines no longer configured are removed;
 *      those of unhealthy engines, or of engines whose list failed, are left as they are and planned around.
 *   3. decide: desiredPlacement() over the engines listed, the registry, the synced placements (plus this
 *      process's loads and unloads in flight), the store's demand, and the (engine, adapter) pairs backing off;
 *   4. act: every unload first (marked unloading, removed when the engine confirms), then every load (marked
 *      loading, then resident, or failed with the engine's message), in parallel; loads onto an engine where an
 *      unload of this round failed are skipped, since the slot they counted on is still taken. A failed load
 *      backs that pair off (retryBaseMs doubling up to retryMaxMs); placement then prefers other engines.
 * "Already loaded" from a load and "not found" from an unload are successes: the state is what was wanted.
 *
 * loadNow(adapter, engine) is the router's cold start, on the same path (single flight per (engine, adapter) in
 * this process; across replicas the router first takes the store's claimLoad()). It needs no lease, and makes
 * room on a full engine by unloading one adapter by placement's eviction rules (roomFor()).
 */

import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { AdapterPlacement, AdapterStateStore } from '../core/state/adapter-state.js';
import { EngineAdapterError, EngineAdapters, type AdapterEngineRef, type ResidentAdapter } from './engine-adapters.js';
import { desiredPlacement, roomFor, type EngineAdapterPair, type Plan, type PlacementEngine, type PlacementOptions, type RegisteredAdapter } from './placement.js';

/** An engine as the controller sees it (the gateway maps its registry's snapshots to these). */
export interface ControllerEngine extends AdapterEngineRef {
  readonly models: readonly string[];
  readonly healthy: boolean;
  /** Adapters it may hold at once; default options.placement.maxAdaptersPerEngine (4). */
  readonly maxAdapters?: number | undefined;
}

/** The part of a pino (or Fastify) logger the controller uses. */
export interface AdaptersControllerLogger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

export interface AdaptersControllerHooks {
  /** A load succeeded, after `ms`. */
  onLoad?(engine: string, adapter: string, ms: number): void;
  onUnload?(engine: string, adapter: string, ms: number): void;
  /** A load (or an unload) failed; `reason` carries the engine's message. */
  onFailure?(engine: string, adapter: string, reason: string, operation: 'load' | 'unload'): void;
  /** Each round's outcome (for metrics on leadership, rounds and plans). */
  onRound?(report: RoundReport): void;
}

export interface AdaptersControllerOptions {
  /** Between rounds. Default 2 s. */
  readonly intervalMs?: number;
  /** Default 10 s; must exceed intervalMs. */
  readonly leaseTtlMs?: number;
  /** This controller's name in the lease. Default <hostname>:<pid>:<random>. */
  readonly holderId?: string;
  readonly placement?: Partial<PlacementOptions>;
  /** First retry delay of a failed (engine, adapter) load; doubles per failure. Default 1 s. */
  readonly retryBaseMs?: number;
  /** Default 60 s. */
  readonly retryMaxMs?: number;
  /** Engine API timeouts. Defaults 5 s (list), 120 s (load), 30 s (unload). */
  readonly listTimeoutMs?: number;
  readonly loadTimeoutMs?: number;
  readonly unloadTimeoutMs?: number;
  /** A loading placement nobody here works on and no engine lists is dropped after this. Default loadTimeoutMs + 10 s. */
  readonly staleLoadingMs?: number;
  /** Failed placements are removed from the store after this. Default retryMaxMs. */
  readonly failedTtlMs?: number;
  /** The clock of placements' `since` and backoffs; keep it the store's clock. Default Date.now. */
  readonly now?: () => number;
}

export interface AdaptersControllerDeps {
  readonly store: AdapterStateStore;
  /** The engines now (called every round). */
  readonly engines: () => readonly ControllerEngine[];
  /** The adapter registry (the gateway reads the database). A round whose call fails does nothing. */
  readonly adapters: () => Promise<readonly RegisteredAdapter[]>;
  readonly options?: AdaptersControllerOptions;
  readonly hooks?: AdaptersControllerHooks;
  readonly logger?: AdaptersControllerLogger;
  /** The engine API client; default one of its own (closed by stop()). */
  readonly client?: EngineAdapters;
}

export interface RoundReport {
  /** Whether this controller held the lease (and so acted). */
  readonly leader: boolean;
  /** Engines listed, and engines whose list failed (left out of the plan). */
  readonly observed: string[];
  readonly unobserved: string[];
  /** Placements written or removed to match the engines. */
  readonly synced: number;
  readonly plan: Plan | undefined;
  readonly loaded: EngineAdapterPair[];
  readonly unloaded: EngineAdapterPair[];
  readonly failed: (EngineAdapterPair & { readonly operation: 'load' | 'unload'; readonly reason: string })[];
  /** Loads not tried (their engine's unload failed, or stop() came first). */
  readonly skipped: EngineAdapterPair[];
  /** Why the round stopped early, if it did. */
  readonly error?: string;
}

interface Backoff {
  failures: number;
  until: number;
  reason: string;
}

const SILENT_INFO = (): void => {};
const defaultLogger: AdaptersControllerLogger = {
  info: SILENT_INFO,
  warn: (details, message) => console.warn(message, details),
  error: (details, message) => console.error(message, details),
};

export class AdaptersController {
  readonly holderId: string;
  readonly #store: AdapterStateStore;
  readonly #claimTtlMs: number;
  readonly #engines: () => readonly ControllerEngine[];
  readonly #adapters: () => Promise<readonly RegisteredAdapter[]>;
  readonly #hooks: AdaptersControllerHooks;
  readonly #log: AdaptersControllerLogger;
  readonly #client: EngineAdapters;
  readonly #ownsClient: boolean;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #leaseTtlMs: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  readonly #staleLoadingMs: number;
  readonly #failedTtlMs: number;
  readonly #placement: Partial<PlacementOptions>;

  readonly #loads = new Map<string, Promise<void>>();
  readonly #unloads = new Map<string, Promise<void>>();
  readonly #backoff = new Map<string, Backoff>();
  #leader = false;
  #lastUnplaced = '[]';
  #current: Promise<RoundReport> | undefined;
  #queued: Promise<RoundReport> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;
  #stopping: Promise<void> | undefined;

  constructor(deps: AdaptersControllerDeps) {
    const o = deps.options ?? {};
    this.#store = deps.store;
    this.#engines = deps.engines;
    this.#adapters = deps.adapters;
    this.#hooks = deps.hooks ?? {};
    this.#log = deps.logger ?? defaultLogger;
    this.#now = o.now ?? Date.now;
    this.#intervalMs = positive('intervalMs', o.intervalMs ?? 2_000);
    this.#leaseTtlMs = positiveInteger('leaseTtlMs', o.leaseTtlMs ?? 10_000);
    if (this.#leaseTtlMs <= this.#intervalMs) throw new RangeError(`AdaptersController: leaseTtlMs (${this.#leaseTtlMs}) must exceed intervalMs (${this.#intervalMs})`);
    this.#retryBaseMs = positive('retryBaseMs', o.retryBaseMs ?? 1_000);
    this.#retryMaxMs = positive('retryMaxMs', o.retryMaxMs ?? 60_000);
    const loadTimeoutMs = positive('loadTimeoutMs', o.loadTimeoutMs ?? 120_000);
    this.#staleLoadingMs = positive('staleLoadingMs', o.staleLoadingMs ?? loadTimeoutMs + 10_000);
    // Outlives any load, so a claim never lapses while its load runs; released as soon as the load ends.
    this.#claimTtlMs = loadTimeoutMs + 10_000;
    this.#failedTtlMs = positive('failedTtlMs', o.failedTtlMs ?? this.#retryMaxMs);
    this.#placement = o.placement ?? {};
    this.holderId = o.holderId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.#ownsClient = deps.client === undefined;
    this.#client = deps.client ?? new EngineAdapters({ listTimeoutMs: o.listTimeoutMs, loadTimeoutMs, unloadTimeoutMs: o.unloadTimeoutMs });
  }

  /** Whether the last round held the lease. */
  get leader(): boolean {
    return this.#leader;
  }

  /** Starts the loop: a round now, then one every intervalMs after the previous ended. */
  start(): void {
    if (this.#started || this.#stopped) throw new Error('adapters controller already started or stopped');
    this.#started = true;
    this.#tick();
  }

  /** A round as soon as the current one (if any) ends; calls meanwhile share it. */
  nudge(): void {
    if (this.#stopped) return;
    void this.reconcileNow().catch(() => {});
  }

  /**
   * One round now, or right after the one running (concurrent calls share that next round). Resolves with its
   * report once its loads and unloads are done; a round that could not run (store or registry down) reports
   * `error` rather than rejecting.
   */
  reconcileNow(): Promise<RoundReport> {
    if (this.#stopped) return Promise.reject(new Error('adapters controller stopped'));
    if (this.#current === undefined) {
      const round = this.#round().finally(() => {
        if (this.#current === round) this.#current = undefined;
      });
      this.#current = round;
      return round;
    }
    this.#queued ??= this.#current
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.reconcileNow();
      });
    return this.#queued;
  }

  /**
   * Loads `adapter` on `engine` now (the router's cold start): resolves once it is resident, rejects with the
   * reason otherwise (unknown adapter or engine, engine unhealthy or not serving the base model, backing off
   * after a recent failure there, no room, or the engine's error). Unloads one adapter first when the engine is
   * full and one may go. Joins a load of the same pair already running in this process.
   */
  async loadNow(adapter: string, engine: string): Promise<void> {
    if (this.#stopped) throw new Error('adapters controller stopped');
    const key = pairKey(engine, adapter);
    const running = this.#loads.get(key);
    if (running !== undefined) return await running;
    const eng = this.#engines().find((e) => e.id === engine);
    if (eng === undefined) throw new Error(`adapters: unknown engine "${engine}"`);
    if (!eng.healthy) throw new Error(`adapters: engine "${engine}" is unhealthy`);
    const registry = await this.#adapters();
    const reg = registry.find((a) => a.name === adapter);
    if (reg === undefined) throw new Error(`adapters: adapter "${adapter}" is not registered`);
    if (!eng.models.includes(reg.baseModel)) throw new Error(`adapters: engine "${engine}" does not serve ${reg.baseModel}, the base model of "${adapter}"`);
    const backoff = this.#backoff.get(key);
    const now = this.#now();
    if (backoff !== undefined && backoff.until > now) {
      throw new Error(`adapters: loading "${adapter}" on "${engine}" failed ${backoff.failures} time(s), next try in ${backoff.until - now} ms: ${backoff.reason}`);
    }
    const [placements, demand] = await Promise.all([this.#store.placements(), this.#store.demand()]);
    if (placements.some((p) => p.engine === engine && p.adapter === adapter && p.state === 'resident')) return;
    const room = roomFor(
      { engines: [toPlacementEngine(eng)], adapters: registry, placements: this.#withInFlight(placements), demand, now, options: this.#placement },
      adapter,
      engine,
    );
    if (!room.ok) throw new Error(`adapters: cannot load "${adapter}" on "${engine}": ${room.reason}`);
    // A load of the pair may have started while we looked.
    const joined = this.#loads.get(key);
    if (joined !== undefined) return await joined;
    if (room.unload !== undefined) {
      const since = placements.find((p) => p.engine === engine && p.adapter === room.unload!.adapter)?.since ?? now;
      await this.#unload(eng, room.unload.adapter, since);
    }
    await this.#load(eng, reg);
  }

  /**
   * Unloads `adapter` from every engine the shared state places it on (an admin removed it from the registry;
   * the loop never unloads what is not registered, since engines may hold adapters loaded by hand). Failures are
   * reported through the hooks and the logger, not thrown: the removal itself has happened.
   */
  async unloadEverywhere(adapter: string): Promise<void> {
    const placements = (await this.#store.placements()).filter((p) => p.adapter === adapter && p.state !== 'failed');
    await Promise.all(
      placements.map(async (p) => {
        const eng = this.#engines().find((e) => e.id === p.engine);
        if (eng === undefined) return this.#store.removePlacement(p.engine, adapter).catch(() => {});
        await this.#unload(eng, adapter, p.since).catch(() => {});
      }),
    );
  }

  /** Stops the loop, waits for the round and the loads and unloads running, and gives up the lease. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      clearTimeout(this.#timer);
      await Promise.allSettled([this.#current, this.#queued]);
      await Promise.allSettled([...this.#loads.values(), ...this.#unloads.values()]);
      try {
        await this.#store.releaseLease(this.holderId);
      } catch (err) {
        this.#log.warn({ err: errMessage(err) }, 'adapters controller: could not release the lease; it expires by itself');
      }
      this.#leader = false;
      if (this.#ownsClient) await this.#client.close();
    })();
    return this.#stopping;
  }

  #tick(): void {
    if (this.#stopped) return;
    this.reconcileNow()
      .catch(() => undefined)
      .finally(() => {
        if (this.#stopped) return;
        this.#timer = setTimeout(() => this.#tick(), this.#intervalMs);
        this.#timer.unref();
      });
  }

  async #round(): Promise<RoundReport> {
    const report: { -readonly [K in Exclude<keyof RoundReport, 'error'>]: RoundReport[K] } = {
      leader: false,
      observed: [],
      unobserved: [],
      synced: 0,
      plan: undefined,
      loaded: [],
      unloaded: [],
      failed: [],
      skipped: [],
    };
    const done = (error?: string): RoundReport => {
      const out: RoundReport = error === undefined ? report : { ...report, error };
      safely(() => this.#hooks.onRound?.(out));
      return out;
    };

    if (!(await this.#renewLease())) return done();
    report.leader = true;
    const renewal = setInterval(() => void this.#renewLease(), Math.max(1, Math.floor(this.#leaseTtlMs / 3)));
    renewal.unref();
    try {
      let registry: readonly RegisteredAdapter[];
      let stored: AdapterPlacement[];
      let engines: readonly ControllerEngine[];
      try {
        // The store first, the engines second: a placement that changes in between is never mistaken for a loss.
        [registry, stored] = await Promise.all([this.#adapters(), this.#store.placements()]);
        engines = this.#engines();
      } catch (err) {
        this.#log.warn({ err: errMessage(err) }, 'adapters controller: registry, engines or store unavailable; round skipped');
        return done(errMessage(err));
      }
      const healthy = engines.filter((e) => e.healthy);
      const listed = await Promise.all(
        healthy.map((e) =>
          this.#client.list(e).then(
            (adapters) => ({ e, adapters }),
            (err: unknown) => ({ e, err }),
          ),
        ),
      );
      const observed = new Map<string, { e: ControllerEngine; adapters: ResidentAdapter[] }>();
      for (const l of listed) {
        if ('adapters' in l) {
          observed.set(l.e.id, l);
          report.observed.push(l.e.id);
        } else {
          report.unobserved.push(l.e.id);
          this.#log.warn({ engine: l.e.id, err: errMessage(l.err) }, 'adapters controller: could not list adapters; engine left out of this round');
        }
      }

      let placements: AdapterPlacement[];
      try {
        placements = await this.#sync(engines, observed, stored, report);
      } catch (err) {
        this.#log.warn({ err: errMessage(err) }, 'adapters controller: could not update the store; round skipped');
        return done(errMessage(err));
      }
      let demand: Awaited<ReturnType<AdapterStateStore['demand']>>;
      try {
        demand = await this.#store.demand();
      } catch (err) {
        this.#log.warn({ err: errMessage(err) }, 'adapters controller: could not read demand; round skipped');
        return done(errMessage(err));
      }
      const now = this.#now();
      const plan = desiredPlacement({
        engines: [...observed.values()].map(({ e }) => toPlacementEngine(e)),
        adapters: registry,
        placements: this.#withInFlight(placements),
        demand,
        now,
        blocked: this.#blocked(now),
        options: this.#placement,
      });
      report.plan = plan;
      // Logged when it changes, not every round.
      const unplaced = JSON.stringify(plan.unplaced);
      if (unplaced !== this.#lastUnplaced) {
        this.#lastUnplaced = unplaced;
        if (plan.unplaced.length > 0) this.#log.info({ unplaced: plan.unplaced }, 'adapters controller: adapters short of their replicas');
      }
      if (plan.loads.length === 0 && plan.unloads.length === 0) return done();
      // The lease may have gone while we looked (renewal failed): then someone else decides.
      if (!this.#leader || this.#stopped) {
        report.skipped.push(...plan.loads);
        return done();
      }

      const engineOf = (id: string): ControllerEngine => observed.get(id)!.e;
      const sinceOf = new Map(placements.map((p) => [pairKey(p.engine, p.adapter), p.since]));
      const blockedEngines = new Set<string>();
      await Promise.all(
        plan.unloads.map(async (u) => {
          try {
            await this.#unload(engineOf(u.engine), u.adapter, sinceOf.get(pairKey(u.engine, u.adapter)) ?? now);
            report.unloaded.push(u);
          } catch (err) {
            blockedEngines.add(u.engine);
            report.failed.push({ ...u, operation: 'unload', reason: errMessage(err) });
          }
        }),
      );
      const byName = new Map(registry.map((a) => [a.name, a]));
      // An adapter placed nowhere may be cold-starting in a router right now (claimLoad): it is loaded here only
      // under the same claim, so the two never both place it; without the claim it waits for the next round.
      const placed = new Set(placements.filter((p) => p.state !== 'failed').map((p) => p.adapter));
      const claimed = new Set<string>();
      const refused = new Set<string>();
      const claimHolder = `${this.holderId}/round`;
      const loads: EngineAdapterPair[] = [];
      for (const l of plan.loads) {
        if (!placed.has(l.adapter) && !claimed.has(l.adapter)) {
          if (refused.has(l.adapter) || !(await this.#store.claimLoad(l.adapter, claimHolder, this.#claimTtlMs).catch(() => false))) {
            refused.add(l.adapter);
            report.skipped.push(l);
            continue;
          }
          claimed.add(l.adapter);
          // A cold start may have placed it since this round read the placements, and released its claim.
          const current = await this.#store.placements().catch(() => placements);
          if (current.some((p) => p.adapter === l.adapter && p.state !== 'failed')) {
            refused.add(l.adapter);
            report.skipped.push(l);
            continue;
          }
        }
        if (refused.has(l.adapter)) {
          report.skipped.push(l);
          continue;
        }
        loads.push(l);
      }
      await Promise.all(
        loads.map(async (l) => {
          if (blockedEngines.has(l.engine) || this.#stopped) {
            report.skipped.push(l);
            return;
          }
          try {
            await this.#load(engineOf(l.engine), byName.get(l.adapter)!);
            report.loaded.push(l);
          } catch (err) {
            report.failed.push({ ...l, operation: 'load', reason: errMessage(err) });
          }
        }),
      );
      await Promise.all([...claimed].map((a) => this.#store.releaseLoad(a, claimHolder).catch(() => {})));
      return done();
    } finally {
      clearInterval(renewal);
    }
  }

  async #renewLease(): Promise<boolean> {
    try {
      this.#leader = !this.#stopped && (await this.#store.acquireLease(this.holderId, this.#leaseTtlMs));
    } catch (err) {
      if (this.#leader) this.#log.warn({ err: errMessage(err) }, 'adapters controller: could not renew the lease; acting no more until it can');
      this.#leader = false;
    }
    return this.#leader;
  }

  /** Writes the store to match the engines listed; returns the placements as they are afterwards. */
  async #sync(
    engines: readonly ControllerEngine[],
    observed: ReadonlyMap<string, { e: ControllerEngine; adapters: ResidentAdapter[] }>,
    stored: readonly AdapterPlacement[],
    report: { synced: number },
  ): Promise<AdapterPlacement[]> {
    const now = this.#now();
    const known = new Set(engines.map((e) => e.id));
    const out = new Map<string, AdapterPlacement>();
    const writes: Promise<void>[] = [];
    const set = (p: AdapterPlacement): void => {
      out.set(pairKey(p.engine, p.adapter), p);
      writes.push(this.#store.setPlacement(p));
      report.synced++;
    };
    const remove = (p: AdapterPlacement): void => {
      out.delete(pairKey(p.engine, p.adapter));
      writes.push(this.#store.removePlacement(p.engine, p.adapter));
      report.synced++;
    };
    for (const p of stored) out.set(pairKey(p.engine, p.adapter), p);

    for (const p of stored) {
      const key = pairKey(p.engine, p.adapter);
      const busy = this.#loads.has(key) || this.#unloads.has(key);
      if (!known.has(p.engine)) {
        if (!busy) remove(p);
        continue;
      }
      const seen = observed.get(p.engine);
      if (p.state === 'failed' && now - p.since > this.#failedTtlMs && !(seen?.adapters.some((a) => a.name === p.adapter) ?? false)) {
        remove(p);
        continue;
      }
      if (seen === undefined || busy) continue; // unhealthy or unlisted engine; or our own operation will write
      if (seen.adapters.some((a) => a.name === p.adapter)) continue; // handled below
      if (p.state === 'resident' || p.state === 'unloading') remove(p);
      else if (p.state === 'loading' && now - p.since > this.#staleLoadingMs) remove(p);
    }
    for (const { e, adapters } of observed.values()) {
      for (const a of adapters) {
        const key = pairKey(e.id, a.name);
        if (this.#loads.has(key) || this.#unloads.has(key)) continue;
        const p = out.get(key);
        if (p?.state === 'resident') continue;
        set({ engine: e.id, adapter: a.name, state: 'resident', since: now });
      }
    }
    await Promise.all(writes);
    return [...out.values()];
  }

  /** The placements with this process's operations in flight written over them (the store may lag behind). */
  #withInFlight(placements: readonly AdapterPlacement[]): AdapterPlacement[] {
    const out = new Map(placements.map((p) => [pairKey(p.engine, p.adapter), p]));
    const now = this.#now();
    for (const key of this.#loads.keys()) {
      const [engine, adapter] = splitKey(key);
      const p = out.get(key);
      out.set(key, { engine, adapter, state: 'loading', since: p?.since ?? now });
    }
    for (const key of this.#unloads.keys()) {
      const [engine, adapter] = splitKey(key);
      out.set(key, { engine, adapter, state: 'unloading', since: now });
    }
    return [...out.values()];
  }

  #blocked(now: number): EngineAdapterPair[] {
    const out: EngineAdapterPair[] = [];
    for (const [key, b] of this.#backoff) {
      // Forgotten once long past, so the map holds only recent failures.
      if (b.until + this.#retryMaxMs < now) this.#backoff.delete(key);
      else if (b.until > now) {
        const [engine, adapter] = splitKey(key);
        out.push({ engine, adapter });
      }
    }
    return out;
  }

  /** The one load path: single flight per (engine, adapter); loading -> resident, or failed with the reason. */
  #load(engine: ControllerEngine, adapter: RegisteredAdapter): Promise<void> {
    const key = pairKey(engine.id, adapter.name);
    const running = this.#loads.get(key);
    if (running !== undefined) return running;
    const p = this.#runLoad(engine, adapter, key).finally(() => this.#loads.delete(key));
    this.#loads.set(key, p);
    return p;
  }

  async #runLoad(engine: ControllerEngine, adapter: RegisteredAdapter, key: string): Promise<void> {
    const name = adapter.name;
    const started = performance.now();
    // Best effort: the engine is the truth, and the next observation writes what it reports.
    await this.#store.setPlacement({ engine: engine.id, adapter: name, state: 'loading', since: this.#now() }).catch((err: unknown) => {
      this.#log.warn({ engine: engine.id, adapter: name, err: errMessage(err) }, 'adapters controller: could not record a load starting');
    });
    try {
      await this.#client.load(engine, name, adapter.source);
    } catch (err) {
      if (!(err instanceof EngineAdapterError && err.code === 'already_loaded')) {
        const reason = errMessage(err);
        const prev = this.#backoff.get(key);
        const failures = (prev?.failures ?? 0) + 1;
        const delay = Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** (failures - 1));
        this.#backoff.set(key, { failures, until: this.#now() + delay, reason });
        await this.#store.setPlacement({ engine: engine.id, adapter: name, state: 'failed', reason, since: this.#now() }).catch((e: unknown) => {
          this.#log.warn({ engine: engine.id, adapter: name, err: errMessage(e) }, 'adapters controller: could not record a failed load');
        });
        this.#log.warn({ engine: engine.id, adapter: name, failures, retryInMs: delay, err: reason }, 'adapters controller: load failed');
        safely(() => this.#hooks.onFailure?.(engine.id, name, reason, 'load'));
        throw err;
      }
    }
    const ms = performance.now() - started;
    this.#backoff.delete(key);
    try {
      await this.#store.setPlacement({ engine: engine.id, adapter: name, state: 'resident', since: this.#now() });
    } catch (err) {
      // Loaded all the same: the next round's observation writes it.
      this.#log.warn({ engine: engine.id, adapter: name, err: errMessage(err) }, 'adapters controller: loaded, but could not record it');
    }
    this.#log.info({ engine: engine.id, adapter: name, ms: Math.round(ms) }, 'adapters controller: loaded');
    safely(() => this.#hooks.onLoad?.(engine.id, name, ms));
  }

  #unload(engine: ControllerEngine, adapter: string, since: number): Promise<void> {
    const key = pairKey(engine.id, adapter);
    const running = this.#unloads.get(key);
    if (running !== undefined) return running;
    const p = this.#runUnload(engine, adapter, since).finally(() => this.#unloads.delete(key));
    this.#unloads.set(key, p);
    return p;
  }

  async #runUnload(engine: ControllerEngine, adapter: string, since: number): Promise<void> {
    const started = performance.now();
    await this.#store.setPlacement({ engine: engine.id, adapter, state: 'unloading', since: this.#now() }).catch((err: unknown) => {
      this.#log.warn({ engine: engine.id, adapter, err: errMessage(err) }, 'adapters controller: could not record an unload starting');
    });
    try {
      await this.#client.unload(engine, adapter);
    } catch (err) {
      if (!(err instanceof EngineAdapterError && err.code === 'not_loaded')) {
        const reason = errMessage(err);
        // Most likely still there; the next observation corrects this either way.
        await this.#store.setPlacement({ engine: engine.id, adapter, state: 'resident', since }).catch(() => {});
        this.#log.warn({ engine: engine.id, adapter, err: reason }, 'adapters controller: unload failed');
        safely(() => this.#hooks.onFailure?.(engine.id, adapter, reason, 'unload'));
        throw err;
      }
    }
    const ms = performance.now() - started;
    try {
      await this.#store.removePlacement(engine.id, adapter);
    } catch (err) {
      this.#log.warn({ engine: engine.id, adapter, err: errMessage(err) }, 'adapters controller: unloaded, but could not record it');
    }
    this.#log.info({ engine: engine.id, adapter, ms: Math.round(ms) }, 'adapters controller: unloaded');
    safely(() => this.#hooks.onUnload?.(engine.id, adapter, ms));
  }
}

function toPlacementEngine(e: ControllerEngine): PlacementEngine {
  return { id: e.id, models: e.models, healthy: e.healthy, maxAdapters: e.maxAdapters };
}

function pairKey(engine: string, adapter: string): string {
  return `${engine}\u0000${adapter}`;
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf('\u0000');
  return [key.slice(0, i), key.slice(i + 1)];
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function safely(f: () => void): void {
  try {
    f();
  } catch {
    // hooks must not break the controller
  }
}

function positive(name: string, v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`AdaptersController: ${name} must be a positive number, got ${v}`);
  return v;
}

function positiveInteger(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`AdaptersController: ${name} must be a positive integer, got ${v}`);
  return v;
}
