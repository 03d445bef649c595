/**
 * Where LoRA adapters should be resident: a pure, deterministic function of the engines, the registered adapters,
 * the current placements and the demand, so the controller, its tests and an offline replay decide alike. It
 * returns what to change (loads and unloads), never a whole new layout: what works stays where it is.
 *
 * Terms. An adapter's *replicas* are the healthy engines serving its base model where it is resident or loading.
 * An engine's *slots* in use are its resident, loading and unloading adapters, registered or not; it has
 * `maxAdapters` of them (default options.maxAdaptersPerEngine, 4). Adapters an engine holds that are not
 * registered (loaded by hand, or with --lora-modules) take slots but are never unloaded here. Failed placements
 * take nothing. Unhealthy engines are left alone: their placements count for nothing and nothing goes there.
 *
 * Demand. `perMinute` is the adapter's request rate over about the last minute; an adapter is *active* while
 * perMinute > 0 or it was requested within idleUnloadMs (default 5 min), *idle* otherwise (never requested: idle).
 * *Hot* adapters are those with perMinute >= hotPerMinute (default requestsPerReplica / 2).
 *
 * Replica targets, with hysteresis (R = requestsPerReplica, default 60/min; r = current replicas; d = perMinute):
 *   - up:   when d > r * R * 1.2 (scaleUpFactor), the target becomes max(r + 1, ceil(d / R)), e.g. 0 -> ceil(d / R)
 *           on a cold start, 1 -> 2 above 72/min, 2 -> 3 above 144/min;
 *   - down: when r >= 2 and d < (r - 1) * R * 0.8 (scaleDownFactor), the target is r - 1: one replica per round,
 *           e.g. 3 -> 2 below 96/min, 2 -> 1 below 48/min;
 *   - else the target is r. Every active adapter's target is at least 1; an idle adapter's last replica is not
 *     taken away by scaling down (only to make room, below), and an idle adapter is never loaded.
 *   Targets are capped by maxReplicas and the number of eligible engines.
 *   The bands overlap (r is kept for (r-1)*R*0.8 <= d <= r*R*1.2), and neither step lands outside the band of its
 *   result (after up: d <= target*R; after down: d < target*R*0.8), so steady demand never flips a decision, and
 *   demand that wobbles within +-20% around a boundary neither.
 *
 * Minimum residency: nothing resident for less than minResidencyMs (default 60 s, from the placement's `since`) is
 * unloaded, whatever the reason, and loading placements are never unloaded: a load always gets to be used.
 *
 * Order of work in one round:
 *   1. scale-downs: one replica of each adapter above its target, taken from the busiest engine holding it
 *      (most hot adapters, then most adapters, then most demand, then id);
 *   2. loads, level by level: every active adapter's first replica (by demand, then most recently used, then
 *      name), then every adapter's second replica, then third..., so that a scarce slot goes to an adapter with
 *      no replica before it goes to another's extra one.
 *   Each load goes to an eligible engine (healthy, serves the base model, does not hold the adapter, not in
 *   `blocked`) with a free slot, preferring (spread) for a hot adapter the engine with the fewest hot adapters,
 *   then fewest adapters, then least demand, then id; for a cold one the fewest adapters, then least demand,
 *   then id. So hot adapters land on different engines before any engine gets a second one.
 *   With no free slot on any eligible engine, room is made by unloading one adapter, least recently used first
 *   (lastUsed, then name, then engine id) within the first class that has a candidate:
 *     a. idle adapters;
 *     b. replicas above their adapter's target (not yet removed because of the one-per-round rule);
 *     c. only for a first replica: extra replicas (r >= 2) of other adapters;
 *     d. only for a first replica: the sole replica of an adapter whose demand the newcomer's exceeds by the
 *        scale-up factor (d_new > d_old * 1.2), so two adapters competing for one slot do not take turns.
 *   An adapter that cannot get a replica is reported in `unplaced`.
 */

import type { AdapterPlacement } from '../core/state/adapter-state.js';

export interface PlacementEngine {
  readonly id: string;
  /** Base models the engine serves. */
  readonly models: readonly string[];
  readonly healthy: boolean;
  /** Adapters it may hold at once (vLLM --max-loras). Default options.maxAdaptersPerEngine. */
  readonly maxAdapters?: number | undefined;
}

export interface RegisteredAdapter {
  readonly name: string;
  readonly baseModel: string;
  /** Where the engine loads it from (lora_path): a path or a hub id. */
  readonly source: string;
}

export interface AdapterDemand {
  /** Requests over about the last minute. */
  readonly perMinute: number;
  /** ms since epoch of the last request. */
  readonly lastUsed: number;
}

export interface EngineAdapterPair {
  readonly engine: string;
  readonly adapter: string;
}

export interface PlacementOptions {
  /** Default slots per engine, for engines that do not say. Default 4. */
  readonly maxAdaptersPerEngine: number;
  /** Demand one replica is meant to serve, requests per minute. Default 60. */
  readonly requestsPerReplica: number;
  /** Add replicas when demand > replicas * requestsPerReplica * this. Default 1.2. */
  readonly scaleUpFactor: number;
  /** Remove one when demand < (replicas - 1) * requestsPerReplica * this. Default 0.8. */
  readonly scaleDownFactor: number;
  /** Demand at and above which an adapter counts as hot for spreading. Default requestsPerReplica / 2. */
  readonly hotPerMinute: number;
  /** No request for this long: idle, first to go when room is needed. Default 5 min. */
  readonly idleUnloadMs: number;
  /** Never unload what became resident less than this long ago. Default 60 s. */
  readonly minResidencyMs: number;
  /** Most replicas of one adapter. Default unbounded (every eligible engine). */
  readonly maxReplicas: number;
}

export const PLACEMENT_DEFAULTS: Omit<PlacementOptions, 'hotPerMinute'> = {
  maxAdaptersPerEngine: 4,
  requestsPerReplica: 60,
  scaleUpFactor: 1.2,
  scaleDownFactor: 0.8,
  idleUnloadMs: 5 * 60_000,
  minResidencyMs: 60_000,
  maxReplicas: Number.POSITIVE_INFINITY,
};

export interface PlacementInput {
  readonly engines: readonly PlacementEngine[];
  readonly adapters: readonly RegisteredAdapter[];
  readonly placements: readonly AdapterPlacement[];
  readonly demand: ReadonlyMap<string, AdapterDemand>;
  /** ms since epoch, on the clock of the placements' `since` and the demand's `lastUsed`. */
  readonly now: number;
  /** Pairs not to load now (a recent failure there, backing off). */
  readonly blocked?: readonly EngineAdapterPair[];
  readonly options?: Partial<PlacementOptions>;
}

export interface Plan {
  /** In the order decided; the controller runs every unload before any load. */
  readonly loads: EngineAdapterPair[];
  readonly unloads: EngineAdapterPair[];
  /** Replicas wanted per registered adapter that is active or placed. */
  readonly targets: Map<string, number>;
  /** Adapters left short of their target, with why. */
  readonly unplaced: { readonly adapter: string; readonly wanted: number; readonly have: number; readonly reason: 'no eligible engine' | 'no room' }[];
}

export function resolvePlacementOptions(partial: Partial<PlacementOptions> = {}): PlacementOptions {
  const merged = { ...PLACEMENT_DEFAULTS, ...stripUndefined(partial) };
  const o: PlacementOptions = { ...merged, hotPerMinute: partial.hotPerMinute ?? merged.requestsPerReplica / 2 };
  if (!Number.isInteger(o.maxAdaptersPerEngine) || o.maxAdaptersPerEngine < 0) throw new RangeError(`placement: maxAdaptersPerEngine must be a non-negative integer, got ${o.maxAdaptersPerEngine}`);
  if (!(o.requestsPerReplica > 0)) throw new RangeError(`placement: requestsPerReplica must be positive, got ${o.requestsPerReplica}`);
  if (!(o.scaleUpFactor >= 1)) throw new RangeError(`placement: scaleUpFactor must be >= 1, got ${o.scaleUpFactor}`);
  if (!(o.scaleDownFactor > 0 && o.scaleDownFactor <= 1)) throw new RangeError(`placement: scaleDownFactor must be in (0, 1], got ${o.scaleDownFactor}`);
  if (!(o.idleUnloadMs >= 0) || !(o.minResidencyMs >= 0) || !(o.hotPerMinute >= 0)) throw new RangeError('placement: idleUnloadMs, minResidencyMs and hotPerMinute must be >= 0');
  if (!(o.maxReplicas >= 1)) throw new RangeError(`placement: maxReplicas must be >= 1, got ${o.maxReplicas}`);
  return o;
}

/**
 * The replica target from the current count and the demand, before the caps (see the top of the file):
 * hysteresis up at r * R * scaleUpFactor, down one at (r - 1) * R * scaleDownFactor, at least 1 while active.
 */
export function targetReplicas(current: number, perMinute: number, active: boolean, o: PlacementOptions): number {
  const R = o.requestsPerReplica;
  let t = current;
  if (perMinute > current * R * o.scaleUpFactor) t = Math.max(current + 1, Math.ceil(perMinute / R));
  else if (current >= 2 && perMinute < (current - 1) * R * o.scaleDownFactor) t = current - 1;
  return active ? Math.max(t, 1) : t;
}

interface Slot {
  readonly adapter: string;
  readonly state: 'loading' | 'resident' | 'unloading';
  readonly since: number;
}

interface EngineModel {
  readonly id: string;
  readonly models: ReadonlySet<string>;
  readonly cap: number;
  /** adapter -> slot. */
  readonly slots: Map<string, Slot>;
}

interface AdapterModel {
  readonly a: RegisteredAdapter;
  readonly perMinute: number;
  readonly lastUsed: number;
  readonly active: boolean;
  readonly hot: boolean;
  /** Healthy engines serving the base model, by id. */
  readonly eligible: EngineModel[];
  target: number;
}

type Unplaced = Plan['unplaced'][number]['reason'];

/** The input as engines with slots and adapters with demand, and the rules that read them; changed as a plan is made. */
class Layout {
  readonly o: PlacementOptions;
  readonly now: number;
  readonly engines = new Map<string, EngineModel>();
  readonly adapters = new Map<string, AdapterModel>();
  readonly blocked: ReadonlySet<string>;

  constructor(input: PlacementInput) {
    const o = resolvePlacementOptions(input.options);
    this.o = o;
    this.now = input.now;
    // Healthy engines, by id; duplicates of an id: the first one.
    for (const e of [...input.engines].sort((x, y) => cmp(x.id, y.id))) {
      if (!e.healthy || this.engines.has(e.id)) continue;
      const cap = e.maxAdapters ?? o.maxAdaptersPerEngine;
      this.engines.set(e.id, { id: e.id, models: new Set(e.models), cap: Number.isFinite(cap) && cap >= 0 ? Math.floor(cap) : o.maxAdaptersPerEngine, slots: new Map() });
    }
    for (const p of input.placements) {
      if (p.state === 'failed') continue;
      const e = this.engines.get(p.engine);
      if (e === undefined) continue;
      const prev = e.slots.get(p.adapter);
      // Inputs are keyed by (engine, adapter) already; should one repeat, the busier state counts.
      if (prev === undefined || rank(p.state) > rank(prev.state)) e.slots.set(p.adapter, { adapter: p.adapter, state: p.state, since: p.since });
    }
    this.blocked = new Set((input.blocked ?? []).map((b) => pairKey(b.engine, b.adapter)));
    for (const a of [...input.adapters].sort((x, y) => cmp(x.name, y.name))) {
      if (this.adapters.has(a.name)) continue;
      const d = input.demand.get(a.name);
      const perMinute = d !== undefined && d.perMinute > 0 ? d.perMinute : 0;
      const lastUsed = d?.lastUsed ?? 0;
      const active = perMinute > 0 || (d !== undefined && this.now - lastUsed < o.idleUnloadMs);
      const eligible = [...this.engines.values()].filter((e) => e.models.has(a.baseModel));
      this.adapters.set(a.name, { a, perMinute, lastUsed, active, hot: perMinute > 0 && perMinute >= o.hotPerMinute, eligible, target: 0 });
    }
  }

  replicas(m: AdapterModel): number {
    let n = 0;
    for (const e of m.eligible) {
      const s = e.slots.get(m.a.name);
      if (s !== undefined && s.state !== 'unloading') n++;
    }
    return n;
  }

  /** What spreading compares: [hot adapters, adapters, demand] held (unloading ones still hold their slot). */
  load(e: EngineModel): [number, number, number] {
    let hot = 0;
    let heat = 0;
    for (const s of e.slots.values()) {
      const m = this.adapters.get(s.adapter);
      if (m === undefined) continue;
      if (m.hot) hot++;
      heat += m.perMinute;
    }
    return [hot, e.slots.size, heat];
  }

  /** Resident (not loading, not unloading), registered, and resident for at least minResidencyMs. */
  removable(e: EngineModel, name: string): boolean {
    const s = e.slots.get(name);
    return s !== undefined && s.state === 'resident' && this.adapters.has(name) && this.now - s.since >= this.o.minResidencyMs;
  }

  /** Which class of eviction (lower goes first) may take `v`'s replica for `incoming`, if any. */
  victimClass(v: AdapterModel, first: boolean, incoming: AdapterModel): number | undefined {
    if (!v.active) return 0;
    const r = this.replicas(v);
    if (r > v.target) return 1;
    if (!first) return undefined;
    if (r >= 2) return 2;
    if (incoming.perMinute > v.perMinute * this.o.scaleUpFactor) return 3;
    return undefined;
  }

  /** The adapter to unload from one of `engines` to make room for `incoming`: by class, least recently used. */
  victim(engines: readonly EngineModel[], incoming: AdapterModel, first: boolean): { e: EngineModel; adapter: string } | undefined {
    let best: { e: EngineModel; adapter: string; key: [number, number, string, string] } | undefined;
    for (const e of engines) {
      if (e.cap === 0) continue;
      for (const s of e.slots.values()) {
        if (s.adapter === incoming.a.name || !this.removable(e, s.adapter)) continue;
        const v = this.adapters.get(s.adapter)!;
        const cls = this.victimClass(v, first, incoming);
        if (cls === undefined) continue;
        const key: [number, number, string, string] = [cls, v.lastUsed, v.a.name, e.id];
        if (best === undefined || cmpTuple(key, best.key) < 0) best = { e, adapter: s.adapter, key };
      }
    }
    return best;
  }

  /** Spread order among engines with room for `m` (lower first). */
  spreadKey(m: AdapterModel, e: EngineModel): number[] {
    const [hot, count, heat] = this.load(e);
    return m.hot ? [hot, count, heat] : [count, heat];
  }

  computeTargets(): void {
    for (const m of this.adapters.values()) {
      const r = this.replicas(m);
      const capped = Math.min(targetReplicas(r, m.perMinute, m.active, this.o), this.o.maxReplicas, m.eligible.length);
      // Never below what is there only because of the caps: too many replicas go one per round, like any scale-down.
      m.target = capped < r ? Math.max(capped, r - 1) : capped;
    }
  }
}

export function desiredPlacement(input: PlacementInput): Plan {
  const layout = new Layout(input);
  const plan: Plan = { loads: [], unloads: [], targets: new Map(), unplaced: [] };
  layout.computeTargets();
  for (const m of layout.adapters.values()) if (m.target > 0 || layout.replicas(m) > 0) plan.targets.set(m.a.name, m.target);

  const unload = (e: EngineModel, name: string): void => {
    e.slots.delete(name);
    plan.unloads.push({ engine: e.id, adapter: name });
  };

  // 1. Scale-downs, one replica per adapter, from the busiest engine holding it.
  for (const m of layout.adapters.values()) {
    if (layout.replicas(m) <= m.target) continue;
    const holders = m.eligible.filter((e) => layout.removable(e, m.a.name));
    if (holders.length === 0) continue;
    holders.sort((x, y) => cmpTuple(layout.load(y), layout.load(x)) || cmp(x.id, y.id));
    unload(holders[0]!, m.a.name);
  }

  // 2. Loads, level by level.
  const place = (m: AdapterModel, first: boolean): Unplaced | undefined => {
    const name = m.a.name;
    const candidates = m.eligible.filter((e) => !e.slots.has(name) && !layout.blocked.has(pairKey(e.id, name)));
    if (candidates.length === 0) return 'no eligible engine';
    const withRoom = candidates.filter((e) => e.slots.size < e.cap);
    let target: EngineModel;
    if (withRoom.length > 0) {
      withRoom.sort((x, y) => cmpTuple(layout.spreadKey(m, x), layout.spreadKey(m, y)) || cmp(x.id, y.id));
      target = withRoom[0]!;
    } else {
      const v = layout.victim(candidates, m, first);
      if (v === undefined) return 'no room';
      unload(v.e, v.adapter);
      target = v.e;
    }
    target.slots.set(name, { adapter: name, state: 'loading', since: layout.now });
    plan.loads.push({ engine: target.id, adapter: name });
    return undefined;
  };
  const order = [...layout.adapters.values()].sort((x, y) => y.perMinute - x.perMinute || y.lastUsed - x.lastUsed || cmp(x.a.name, y.a.name));
  const maxTarget = order.reduce((n, m) => Math.max(n, m.target), 0);
  const short = new Map<string, Unplaced>();
  for (let level = 1; level <= maxTarget; level++) {
    for (const m of order) {
      // Idle adapters keep what they have but get nothing new (nor back, once evicted).
      if (!m.active || m.target < level || short.has(m.a.name)) continue;
      const have = layout.replicas(m);
      if (have >= level) continue;
      const reason = place(m, have === 0);
      if (reason !== undefined) short.set(m.a.name, reason);
    }
  }
  for (const [name, reason] of short) {
    const m = layout.adapters.get(name)!;
    plan.unplaced.push({ adapter: name, wanted: m.target, have: layout.replicas(m), reason });
  }
  return plan;
}

/**
 * Room for one cold-start load of `adapter` on `engine` (the router chose the engine): `ok` with nothing to unload
 * when the engine has a free slot (or already holds the adapter), `ok` with the adapter to unload first when one
 * may go by the eviction rules above (as for a first replica), else why not.
 */
export function roomFor(
  input: PlacementInput,
  adapter: string,
  engine: string,
): { readonly ok: true; readonly unload: EngineAdapterPair | undefined } | { readonly ok: false; readonly reason: string } {
  const layout = new Layout(input);
  layout.computeTargets();
  const m = layout.adapters.get(adapter);
  if (m === undefined) return { ok: false, reason: `adapter "${adapter}" is not registered` };
  const e = m.eligible.find((x) => x.id === engine);
  if (e === undefined) return { ok: false, reason: `engine "${engine}" is not healthy or does not serve ${m.a.baseModel}` };
  if (e.slots.has(adapter) || e.slots.size < e.cap) return { ok: true, unload: undefined };
  const v = layout.victim([e], m, layout.replicas(m) === 0);
  if (v === undefined) return { ok: false, reason: `engine "${engine}" is full (${e.slots.size} of ${e.cap} adapters) and none may be unloaded now` };
  return { ok: true, unload: { engine, adapter: v.adapter } };
}

function rank(state: Slot['state']): number {
  return state === 'resident' ? 2 : state === 'loading' ? 1 : 0;
}

function pairKey(engine: string, adapter: string): string {
  return `${engine}\u0000${adapter}`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function cmpTuple(a: readonly (number | string)[], b: readonly (number | string)[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    return cmp(String(x), String(y));
  }
  return a.length - b.length;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
