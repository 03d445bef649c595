import { describe, expect, it } from 'vitest';
import type { AdapterPlacement } from '../../../core/state/adapter-state.js';
import {
  desiredPlacement,
  resolvePlacementOptions,
  roomFor,
  targetReplicas,
  type AdapterDemand,
  type Plan,
  type PlacementEngine,
  type PlacementInput,
  type RegisteredAdapter,
} from '../../../adapters-controller/placement.js';

const NOW = 1_700_000_000_000;
const MIN = 60_000;
const LONG_AGO = NOW - 60 * MIN;

const engines = (n: number, model = 'llama', extra: Partial<PlacementEngine> = {}): PlacementEngine[] =>
  Array.from({ length: n }, (_, i) => ({ id: `e${i}`, models: [model], healthy: true, ...extra }));
const adapters = (n: number, model = 'llama', prefix = 'a'): RegisteredAdapter[] =>
  Array.from({ length: n }, (_, i) => ({ name: `${prefix}${i}`, baseModel: model, source: `/lora/${prefix}${i}` }));
const resident = (engine: string, adapter: string, since = LONG_AGO): AdapterPlacement => ({ engine, adapter, state: 'resident', since });
const demandOf = (entries: Record<string, number | [number, number]>): Map<string, AdapterDemand> =>
  new Map(Object.entries(entries).map(([name, v]) => [name, Array.isArray(v) ? { perMinute: v[0], lastUsed: v[1] } : { perMinute: v, lastUsed: NOW - 1000 }]));

/** Engine -> adapters resident or loading after applying the plan to the placements. */
function layoutAfter(placements: readonly AdapterPlacement[], plan: Plan): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (e: string, a: string): void => {
    if (!out.has(e)) out.set(e, new Set());
    out.get(e)!.add(a);
  };
  for (const p of placements) if (p.state !== 'failed') add(p.engine, p.adapter);
  for (const u of plan.unloads) out.get(u.engine)?.delete(u.adapter);
  for (const l of plan.loads) add(l.engine, l.adapter);
  return out;
}

function replicasOf(layout: Map<string, Set<string>>, adapter: string): number {
  let n = 0;
  for (const set of layout.values()) if (set.has(adapter)) n++;
  return n;
}

/** Runs rounds where every load completes and becomes resident at that round's time. */
function simulate(
  base: Omit<PlacementInput, 'placements' | 'now' | 'demand'>,
  rounds: number,
  demandAt: (round: number, now: number) => Map<string, AdapterDemand>,
  opts: { start?: AdapterPlacement[]; stepMs?: number } = {},
): { placements: AdapterPlacement[]; history: { loads: number; unloads: number; plan: Plan }[] } {
  let placements = [...(opts.start ?? [])];
  const history: { loads: number; unloads: number; plan: Plan }[] = [];
  for (let r = 0; r < rounds; r++) {
    const now = NOW + r * (opts.stepMs ?? 2000);
    const plan = desiredPlacement({ ...base, placements, demand: demandAt(r, now), now });
    const gone = new Set(plan.unloads.map((u) => `${u.engine}/${u.adapter}`));
    placements = placements.filter((p) => !gone.has(`${p.engine}/${p.adapter}`));
    for (const l of plan.loads) placements.push(resident(l.engine, l.adapter, now));
    history.push({ loads: plan.loads.length, unloads: plan.unloads.length, plan });
  }
  return { placements, history };
}

describe('targetReplicas (hysteresis)', () => {
  const o = resolvePlacementOptions({ requestsPerReplica: 60 });

  it('adds above replicas x R x 1.2, straight to ceil(d / R)', () => {
    expect(targetReplicas(1, 72, true, o)).toBe(1);
    expect(targetReplicas(1, 72.1, true, o)).toBe(2);
    expect(targetReplicas(2, 144, true, o)).toBe(2);
    expect(targetReplicas(2, 145, true, o)).toBe(3);
    expect(targetReplicas(0, 250, true, o)).toBe(5);
    expect(targetReplicas(1, 400, true, o)).toBe(7);
  });

  it('removes one below (replicas - 1) x R x 0.8, never the last one of an active adapter', () => {
    expect(targetReplicas(2, 48, true, o)).toBe(2);
    expect(targetReplicas(2, 47.9, true, o)).toBe(1);
    expect(targetReplicas(3, 96, true, o)).toBe(3);
    expect(targetReplicas(3, 0, true, o)).toBe(2);
    expect(targetReplicas(1, 0, true, o)).toBe(1);
    expect(targetReplicas(0, 0, true, o)).toBe(1);
    // Idle: nothing added, the last replica kept (it goes only when room is needed).
    expect(targetReplicas(0, 0, false, o)).toBe(0);
    expect(targetReplicas(1, 0, false, o)).toBe(1);
    expect(targetReplicas(2, 0, false, o)).toBe(1);
  });

  it('has no demand at which a step up or down is undone by the next round', () => {
    for (let d = 0; d <= 600; d += 0.5) {
      for (let r = 0; r <= 10; r++) {
        const t = targetReplicas(r, d, true, o);
        // After a step, the next target moves on in the same direction or stays: never back.
        const next = targetReplicas(t, d, true, o);
        if (t > r) expect(next).toBeGreaterThanOrEqual(t);
        if (t < r) expect(next).toBeLessThanOrEqual(t);
      }
    }
  });
});

describe('desiredPlacement', () => {
  it('places every adapter with recent demand on an engine of its base model, and nothing idle', () => {
    const input: PlacementInput = {
      engines: [...engines(2, 'llama'), { id: 'q0', models: ['qwen'], healthy: true }, { id: 'down', models: ['llama', 'qwen'], healthy: false }],
      adapters: [...adapters(5, 'llama'), ...adapters(2, 'qwen', 'q')],
      placements: [],
      // a3 was requested 2 minutes ago (perMinute decayed to 0 but still active); a4 an hour ago; q1 never.
      demand: demandOf({ a0: 10, a1: 5, a2: 1, a3: [0, NOW - 2 * MIN], a4: [0, NOW - 60 * MIN], q0: 3 }),
      now: NOW,
    };
    const plan = desiredPlacement(input);
    const loaded = new Map(plan.loads.map((l) => [l.adapter, l.engine]));
    expect([...loaded.keys()].sort()).toEqual(['a0', 'a1', 'a2', 'a3', 'q0']);
    for (const a of ['a0', 'a1', 'a2', 'a3']) expect(['e0', 'e1']).toContain(loaded.get(a));
    expect(loaded.get('q0')).toBe('q0');
    expect(plan.unloads).toEqual([]);
    expect(plan.unplaced).toEqual([]);
    // Spread: 4 adapters over 2 engines, 2 each.
    expect(plan.loads.filter((l) => l.engine === 'e0')).toHaveLength(2);
  });

  it('never puts more than maxAdapters on an engine, counting loading, unloading and unregistered adapters', () => {
    const input: PlacementInput = {
      engines: [{ id: 'e0', models: ['llama'], healthy: true }, { id: 'e1', models: ['llama'], healthy: true, maxAdapters: 2 }],
      adapters: adapters(12),
      placements: [
        { engine: 'e0', adapter: 'a0', state: 'loading', since: NOW - 100 },
        { engine: 'e0', adapter: 'handmade', state: 'resident', since: LONG_AGO },
        { engine: 'e1', adapter: 'a1', state: 'unloading', since: NOW - 100 },
        { engine: 'e1', adapter: 'a2', state: 'failed', reason: 'boom', since: NOW - 100 },
      ],
      demand: demandOf(Object.fromEntries(adapters(12).map((a, i) => [a.name, 50 - i]))),
      now: NOW,
    };
    const plan = desiredPlacement(input);
    const layout = layoutAfter(input.placements, plan);
    expect(layout.get('e0')!.size).toBe(4);
    expect(layout.get('e1')!.size).toBe(2);
    expect(plan.unloads).toEqual([]); // nothing may go: all active, sole replicas or loading, or not ours
    // a0 loading is its replica; 2 more fit on e0 and 1 on e1 (a1, still unloading there, holds a slot and may not
    // load there again meanwhile); the failed a2 takes none. The busiest adapters get them.
    expect(plan.loads).toEqual([
      { engine: 'e0', adapter: 'a1' },
      { engine: 'e1', adapter: 'a2' },
      { engine: 'e0', adapter: 'a3' },
    ]);
    expect(plan.unplaced.map((u) => u.adapter)).toEqual(['a4', 'a5', 'a6', 'a7', 'a8', 'a9', 'a10', 'a11']);
    expect(plan.unplaced.every((u) => u.reason === 'no room' && u.have === 0)).toBe(true);
  });

  it('spreads hot adapters: no engine gets a second hot one while another has none', () => {
    const plan = desiredPlacement({
      engines: engines(4),
      adapters: adapters(8),
      placements: [resident('e0', 'a4'), resident('e0', 'a5'), resident('e1', 'a6')],
      demand: demandOf({ a0: 55, a1: 50, a2: 45, a3: 40, a4: 1, a5: 1, a6: 1, a7: 1 }),
      now: NOW,
      options: { requestsPerReplica: 60 },
    });
    const hotOn = new Map(plan.loads.filter((l) => ['a0', 'a1', 'a2', 'a3'].includes(l.adapter)).map((l) => [l.adapter, l.engine]));
    expect(new Set(hotOn.values()).size).toBe(4);
    // The cold one goes where there are fewest adapters.
    expect(plan.loads.find((l) => l.adapter === 'a7')!.engine).not.toBe('e0');
  });

  it('makes room by unloading the least recently used idle adapter, sparing what loaded within minResidencyMs', () => {
    const placements = [
      resident('e0', 'old1'),
      resident('e0', 'old2'),
      resident('e0', 'old3', NOW - 10_000), // least recently used, but resident for 10 s only
      resident('e0', 'old4'),
      resident('e1', 'old5'),
      resident('e1', 'old6'),
      resident('e1', 'old7'),
      resident('e1', 'old8'),
    ];
    const registry = [...['old1', 'old2', 'old3', 'old4', 'old5', 'old6', 'old7', 'old8'].map((name) => ({ name, baseModel: 'llama', source: name })), ...adapters(2)];
    const plan = desiredPlacement({
      engines: engines(2),
      adapters: registry,
      placements,
      demand: demandOf({
        old1: [0, NOW - 40 * MIN],
        old2: [0, NOW - 30 * MIN],
        old3: [0, NOW - 90 * MIN],
        old4: [0, NOW - 20 * MIN],
        old5: [0, NOW - 50 * MIN],
        old6: [0, NOW - 10 * MIN],
        old7: [0, NOW - 35 * MIN],
        old8: [3, NOW - 1000], // active
        a0: 20,
        a1: 10,
      }),
      now: NOW,
    });
    // The two least recently used that may go: old5 (50 min) and old1 (40 min); old3 is too fresh.
    expect(plan.unloads).toEqual([
      { engine: 'e1', adapter: 'old5' },
      { engine: 'e0', adapter: 'old1' },
    ]);
    expect(plan.loads).toEqual([
      { engine: 'e1', adapter: 'a0' },
      { engine: 'e0', adapter: 'a1' },
    ]);
  });

  it('gives a slot to an adapter with no replica before another adapter gets an extra one, and evicts extra replicas for it', () => {
    const plan = desiredPlacement({
      engines: engines(2, 'llama', { maxAdapters: 2 }),
      adapters: adapters(3),
      placements: [resident('e0', 'a0'), resident('e1', 'a0'), resident('e0', 'a1'), resident('e1', 'a2')],
      demand: demandOf({ a0: 100, a1: 30, a2: 20, a3: 10 }),
      now: NOW,
    });
    expect(plan.unloads).toEqual([]);
    expect(plan.loads).toEqual([]);

    const withNew = desiredPlacement({
      engines: engines(2, 'llama', { maxAdapters: 2 }),
      adapters: adapters(4),
      placements: [resident('e0', 'a0'), resident('e1', 'a0'), resident('e0', 'a1'), resident('e1', 'a2')],
      demand: demandOf({ a0: 100, a1: 30, a2: 20, a3: 10 }),
      now: NOW,
    });
    // a3 has no replica; a0's extra one gives way (a1 and a2 are sole replicas with more demand than a3).
    expect(withNew.unloads).toHaveLength(1);
    expect(withNew.unloads[0]!.adapter).toBe('a0');
    expect(withNew.loads).toEqual([{ engine: withNew.unloads[0]!.engine, adapter: 'a3' }]);
  });

  it('takes a sole replica only for an adapter with clearly more demand (x1.2), so two do not take turns', () => {
    const base = { engines: engines(1, 'llama', { maxAdapters: 1 }), adapters: adapters(2), placements: [resident('e0', 'a0')], now: NOW };
    expect(desiredPlacement({ ...base, demand: demandOf({ a0: 10, a1: 12 }) }).unloads).toEqual([]);
    const swap = desiredPlacement({ ...base, demand: demandOf({ a0: 10, a1: 12.5 }) });
    expect(swap.unloads).toEqual([{ engine: 'e0', adapter: 'a0' }]);
    expect(swap.loads).toEqual([{ engine: 'e0', adapter: 'a1' }]);
    // And back? a0 now needs 15+ to displace a1.
    const back = desiredPlacement({ ...base, placements: [resident('e0', 'a1')], demand: demandOf({ a0: 10, a1: 12.5 }) });
    expect(back.loads).toEqual([]);
  });

  it('grows replicas with demand, up to the engines serving the base model', () => {
    const { history, placements } = simulate({ engines: engines(6), adapters: adapters(2) }, 30, (r) => demandOf({ a0: 10 + r * 15, a1: 5 }));
    const counts = history.map((h) => h.plan.targets.get('a0')!);
    // Targets never shrink while demand grows, and reach ceil(445 / 60) = 8, capped at the 6 engines.
    for (let i = 1; i < counts.length; i++) expect(counts[i]!).toBeGreaterThanOrEqual(counts[i - 1]!);
    expect(history.at(-1)!.plan.targets.get('a0')).toBe(6);
    expect(placements.filter((p) => p.adapter === 'a0')).toHaveLength(6);
    expect(placements.filter((p) => p.adapter === 'a1')).toHaveLength(1);
    expect(history.reduce((n, h) => n + h.unloads, 0)).toBe(0);
  });

  it('does not flap: steady or wobbling demand settles in a round and then changes nothing', () => {
    const registry = adapters(10);
    // Skewed demand, some of it right at the hysteresis boundaries.
    const steady = { a0: 240, a1: 150, a2: 90, a3: 72, a4: 48, a5: 20, a6: 20, a7: 5, a8: 1 };
    const { history } = simulate({ engines: engines(4), adapters: registry }, 50, () => demandOf(steady));
    expect(history[0]!.loads).toBeGreaterThan(0);
    expect(history.slice(1).every((h) => h.loads === 0 && h.unloads === 0)).toBe(true);

    // +-15% around the boundaries, past minResidencyMs each round (30 s apart): still nothing after the first round.
    const wobble = simulate(
      { engines: engines(4), adapters: registry },
      60,
      (r) => demandOf(Object.fromEntries(Object.entries(steady).map(([k, v]) => [k, v * (r % 2 === 0 ? 1.15 : 0.85)]))),
      { stepMs: 30_000 },
    );
    const changes = wobble.history.slice(1).reduce((n, h) => n + h.loads + h.unloads, 0);
    expect(changes).toBe(0);
  });

  it('scales down one replica per round, from the busiest engine, once loaded for minResidencyMs', () => {
    const placements = [resident('e0', 'a0'), resident('e1', 'a0'), resident('e2', 'a0', NOW - 1000), resident('e0', 'a1'), resident('e0', 'a2')];
    const plan = desiredPlacement({ engines: engines(3), adapters: adapters(3), placements, demand: demandOf({ a0: 10, a1: 1, a2: 1 }), now: NOW });
    // e2's copy is too fresh; of e0 (3 adapters) and e1 (1), e0 is the busier.
    expect(plan.unloads).toEqual([{ engine: 'e0', adapter: 'a0' }]);
    expect(plan.targets.get('a0')).toBe(2);
    expect(plan.loads).toEqual([]);
  });

  it('re-places what an engine lost in a restart, and what was on an unhealthy engine', () => {
    const registry = adapters(6);
    const demand = demandOf({ a0: 200, a1: 100, a2: 30, a3: 30, a4: 30, a5: 30 });
    const first = simulate({ engines: engines(3), adapters: registry }, 3, () => demand);
    const onE1 = first.placements.filter((p) => p.engine === 'e1').map((p) => p.adapter);
    expect(onE1.length).toBeGreaterThan(0);
    // e1 restarted: the controller's observation removed its placements.
    const after = first.placements.filter((p) => p.engine !== 'e1');
    const plan = desiredPlacement({ engines: engines(3), adapters: registry, placements: after, demand, now: NOW + 10 * MIN });
    const layout = layoutAfter(after, plan);
    for (const a of registry) expect(replicasOf(layout, a.name)).toBe(replicasOf(layoutAfter(first.placements, { loads: [], unloads: [], targets: new Map(), unplaced: [] }), a.name));
    expect(plan.unloads).toEqual([]);

    // e2 unhealthy: its adapters count for nothing; the ones with no other replica go to e0/e1.
    const down = desiredPlacement({ engines: [...engines(2), { id: 'e2', models: ['llama'], healthy: false }], adapters: registry, placements: first.placements, demand, now: NOW + 10 * MIN });
    expect(down.loads.every((l) => l.engine !== 'e2')).toBe(true);
    const downLayout = layoutAfter(first.placements.filter((p) => p.engine !== 'e2'), down);
    for (const a of registry) expect(replicasOf(downLayout, a.name)).toBeGreaterThanOrEqual(1);
  });

  it('avoids blocked (engine, adapter) pairs', () => {
    const plan = desiredPlacement({ engines: engines(2), adapters: adapters(1), placements: [], demand: demandOf({ a0: 5 }), now: NOW, blocked: [{ engine: 'e0', adapter: 'a0' }] });
    expect(plan.loads).toEqual([{ engine: 'e1', adapter: 'a0' }]);
    const none = desiredPlacement({ engines: engines(1), adapters: adapters(1), placements: [], demand: demandOf({ a0: 5 }), now: NOW, blocked: [{ engine: 'e0', adapter: 'a0' }] });
    expect(none.loads).toEqual([]);
    expect(none.unplaced).toEqual([{ adapter: 'a0', wanted: 1, have: 0, reason: 'no eligible engine' }]);
  });

  it('is deterministic: the order of its inputs does not matter', () => {
    const registry = adapters(9);
    const demand = demandOf({ a0: 200, a1: 100, a2: 80, a3: 30, a4: 30, a5: 30, a6: 2, a7: 2 });
    const placements = [resident('e1', 'a3'), resident('e2', 'a8'), resident('e0', 'a6')];
    const one = desiredPlacement({ engines: engines(3), adapters: registry, placements, demand, now: NOW });
    const two = desiredPlacement({ engines: [...engines(3)].reverse(), adapters: [...registry].reverse(), placements: [...placements].reverse(), demand: new Map([...demand].reverse()), now: NOW });
    expect(two).toEqual(one);
  });

  it('leaves unregistered adapters alone but counts their slots', () => {
    const plan = desiredPlacement({
      engines: engines(1, 'llama', { maxAdapters: 1 }),
      adapters: adapters(1),
      placements: [resident('e0', 'not-ours')],
      demand: demandOf({ a0: 1000, 'not-ours': [0, LONG_AGO] }),
      now: NOW,
    });
    expect(plan.unloads).toEqual([]);
    expect(plan.unplaced).toEqual([{ adapter: 'a0', wanted: 1, have: 0, reason: 'no room' }]);
  });
});

describe('roomFor (cold start)', () => {
  const base = { engines: engines(1, 'llama', { maxAdapters: 2 }), adapters: adapters(4), now: NOW };

  it('needs nothing on an engine with a free slot, or holding the adapter', () => {
    expect(roomFor({ ...base, placements: [resident('e0', 'a1')], demand: new Map() }, 'a0', 'e0')).toEqual({ ok: true, unload: undefined });
    expect(roomFor({ ...base, placements: [resident('e0', 'a0'), resident('e0', 'a1')], demand: new Map() }, 'a0', 'e0')).toEqual({ ok: true, unload: undefined });
  });

  it('names the least recently used idle adapter on a full engine, and refuses when none may go', () => {
    const full = [resident('e0', 'a1'), resident('e0', 'a2')];
    expect(roomFor({ ...base, placements: full, demand: demandOf({ a1: [0, NOW - 30 * MIN], a2: [0, NOW - 40 * MIN], a0: 1 }) }, 'a0', 'e0')).toEqual({ ok: true, unload: { engine: 'e0', adapter: 'a2' } });
    const busy = roomFor({ ...base, placements: full, demand: demandOf({ a1: 20, a2: 20, a0: 1 }) }, 'a0', 'e0');
    expect(busy.ok).toBe(false);
    expect(roomFor({ ...base, placements: [], demand: new Map() }, 'nope', 'e0')).toMatchObject({ ok: false, reason: expect.stringMatching(/not registered/) });
    expect(roomFor({ ...base, placements: [], demand: new Map() }, 'a0', 'e9')).toMatchObject({ ok: false, reason: expect.stringMatching(/not healthy or does not serve/) });
  });
});
