import { afterEach, describe, expect, it, vi } from 'vitest';
import { FairQueue, QueueFullError, QueueTimeoutError, type QueueTenant } from '../../router/fair-queue.js';

const tenant = (key: string, weight = 1, priority = 0): QueueTenant => ({ key, weight, priority });
const never = () => false;
const always = () => true;

/** Lets promise callbacks run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

/** A promise's outcome, readable synchronously once flushed. */
function track(p: Promise<void>): { state: 'pending' | 'resolved' | 'rejected'; reason: unknown } {
  const t: { state: 'pending' | 'resolved' | 'rejected'; reason: unknown } = { state: 'pending', reason: undefined };
  p.then(
    () => (t.state = 'resolved'),
    (err: unknown) => {
      t.state = 'rejected';
      t.reason = err;
    },
  );
  return t;
}

/**
 * A queue in front of a fake capacity of `free` dispatches: canRun() says yes while some is left, every dispatch
 * takes one, and `order` records the tenants in dispatch order.
 */
function gated(opts: { maxQueued?: number; now?: () => number } = {}) {
  const gate = { free: 0, order: [] as string[] };
  const queue = new FairQueue({
    maxQueued: opts.maxQueued ?? 1000,
    now: opts.now,
    onDispatch: (_waited, t) => {
      gate.free--;
      gate.order.push(t.key);
    },
  });
  const canRun = () => gate.free > 0;
  return { queue, gate, canRun };
}

interface Load {
  readonly tenant: QueueTenant;
  readonly perTick: number;
  readonly prompt: number;
  readonly completion: number;
}

/**
 * A saturated engine of `slots` requests: every tick each load enqueues its requests, the oldest request in flight
 * completes (its completion tokens charged) and the queue is pumped. Returns the requests and the cost (prompt + 2 *
 * completion) dispatched per tenant, and how many of its requests still wait at the end.
 */
function simulate(loads: readonly Load[], ticks: number, slots = 4) {
  const byKey = new Map(loads.map((l) => [l.tenant.key, l]));
  const stats = new Map(loads.map((l) => [l.tenant.key, { requests: 0, cost: 0, arrived: 0 }]));
  const inFlight: Load[] = [];
  const queue = new FairQueue({
    maxQueued: 1_000_000,
    onDispatch: (_waited, t) => {
      const load = byKey.get(t.key)!;
      inFlight.push(load);
      const s = stats.get(t.key)!;
      s.requests++;
      s.cost += load.prompt + 2 * load.completion;
    },
  });
  const canRun = () => inFlight.length < slots;
  for (let tick = 0; tick < ticks; tick++) {
    for (const load of loads) {
      for (let i = 0; i < load.perTick; i++) {
        stats.get(load.tenant.key)!.arrived++;
        queue.enqueue(load.tenant, load.prompt, Infinity, canRun).catch(() => {});
      }
    }
    const done = inFlight.shift();
    if (done !== undefined) queue.charge(done.tenant, 0, done.completion);
    queue.pump();
  }
  return new Map([...stats].map(([key, s]) => [key, { ...s, waiting: s.arrived - s.requests }]));
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('fair queue order', () => {
  it('serves the higher priority class first, then the smaller counter, then FIFO within a tenant', async () => {
    const { queue, gate, canRun } = gated();
    queue.charge(tenant('heavy'), 1000, 0);
    const labels: string[] = [];
    const add = (label: string, t: QueueTenant) => queue.enqueue(t, 10, Infinity, canRun).then(() => labels.push(label));
    // light joins first with nothing waiting anywhere: no lift; heavy keeps its 1000, above light's 0.
    const all = [
      add('light1', tenant('light')),
      add('heavy1', tenant('heavy')),
      add('light2', tenant('light')),
      add('urgent1', tenant('urgent', 1, 1)),
      add('heavy2', tenant('heavy')),
      add('light3', tenant('light')),
    ];
    expect(queue.length).toBe(6);
    gate.free = 6;
    queue.pump();
    await Promise.all(all);
    expect(labels).toEqual(['urgent1', 'light1', 'light2', 'light3', 'heavy1', 'heavy2']);
    expect(queue.length).toBe(0);
  });

  it('alternates between tenants of equal counters, the older head first on ties', () => {
    const { queue, gate, canRun } = gated();
    for (let i = 0; i < 3; i++) void queue.enqueue(tenant('a'), 10, Infinity, canRun);
    for (let i = 0; i < 3; i++) void queue.enqueue(tenant('b'), 10, Infinity, canRun);
    gate.free = 6;
    queue.pump();
    expect(gate.order).toEqual(['a', 'b', 'a', 'b', 'a', 'b']);
  });

  it('lets a request through at once when nothing of its tenant waits and canRun says yes, charging the estimate', async () => {
    const waits: number[] = [];
    const queue = new FairQueue({ maxQueued: 10, onDispatch: (waited) => waits.push(waited) });
    const blocked = track(queue.enqueue(tenant('a'), 100, Infinity, never));
    const passed = track(queue.enqueue(tenant('b', 2), 100, Infinity, always));
    await flush();
    expect(passed.state).toBe('resolved');
    expect(blocked.state).toBe('pending');
    expect(waits).toEqual([0]);
    expect(queue.counter('b')).toBe(50);
    // But not past its own tenant's waiting entry: FIFO within a tenant.
    const behind = track(queue.enqueue(tenant('a'), 100, Infinity, always));
    await flush();
    expect(behind.state).toBe('pending');
    expect(queue.length).toBe(2);
  });

  it('pumps before letting an arrival through, so it never overtakes a waiting entry that could run', () => {
    const { queue, gate, canRun } = gated();
    void queue.enqueue(tenant('waiting'), 10, Infinity, canRun);
    // A slot frees without a pump; the next arrival must not take it.
    gate.free = 1;
    void queue.enqueue(tenant('arrival'), 10, Infinity, canRun);
    expect(gate.order).toEqual(['waiting']);
    expect(queue.length).toBe(1);
  });

  it('charges (prompt * 1 + completion * 2) / weight by default, with negative prompt corrections', () => {
    const queue = new FairQueue({ maxQueued: 10 });
    queue.charge(tenant('a', 2), 100, 50);
    expect(queue.counter('a')).toBe(100);
    queue.charge('a', -40, 0);
    expect(queue.counter('a')).toBe(80);
    const custom = new FairQueue({ maxQueued: 10, promptWeight: 3, completionWeight: 5 });
    custom.charge(tenant('a'), 10, 10);
    expect(custom.counter('a')).toBe(80);
    expect(custom.counter('unknown')).toBe(0);
  });
});

describe('fair queue service shares', () => {
  it('gives a tenant of weight 2 twice the service of one of weight 1 while both wait', () => {
    const stats = simulate(
      [
        { tenant: tenant('double', 2), perTick: 1, prompt: 100, completion: 50 },
        { tenant: tenant('single', 1), perTick: 1, prompt: 100, completion: 50 },
      ],
      3000,
    );
    const double = stats.get('double')!;
    const single = stats.get('single')!;
    expect(double.waiting).toBeGreaterThan(0);
    expect(single.waiting).toBeGreaterThan(0);
    expect(double.cost / single.cost).toBeGreaterThan(1.9);
    expect(double.cost / single.cost).toBeLessThan(2.1);
  });

  it('keeps equal tenants within 10% of equal service when one sends 10x more requests', () => {
    const stats = simulate(
      [
        { tenant: tenant('flood'), perTick: 10, prompt: 100, completion: 50 },
        { tenant: tenant('trickle'), perTick: 1, prompt: 100, completion: 50 },
      ],
      2000,
    );
    const flood = stats.get('flood')!;
    const trickle = stats.get('trickle')!;
    expect(flood.waiting).toBeGreaterThan(0);
    expect(trickle.waiting).toBeGreaterThan(0);
    expect(Math.abs(flood.cost / trickle.cost - 1)).toBeLessThan(0.1);
  });

  it('shares tokens, not requests: a tenant with 10x longer requests gets about a tenth of the dispatches', () => {
    const stats = simulate(
      [
        { tenant: tenant('long'), perTick: 1, prompt: 1000, completion: 100 },
        { tenant: tenant('short'), perTick: 1, prompt: 100, completion: 10 },
      ],
      3000,
    );
    const long = stats.get('long')!;
    const short = stats.get('short')!;
    expect(long.waiting).toBeGreaterThan(0);
    expect(short.waiting).toBeGreaterThan(0);
    expect(Math.abs(long.cost / short.cost - 1)).toBeLessThan(0.1);
    expect(short.requests / long.requests).toBeGreaterThan(8);
  });
});

describe('fair queue counter lift', () => {
  it('lifts a returning idle tenant to the smallest waiting counter, so it does not starve the others', () => {
    const { queue, gate, canRun } = gated();
    queue.charge(tenant('a'), 10_000, 0);
    queue.charge(tenant('b'), 12_000, 0);
    const count = (key: string) => gate.order.filter((k) => k === key).length;
    for (const key of ['a', 'b', 'idle']) {
      // idle never got service: unlifted, its 0 would win the next 100 dispatches.
      for (let i = 0; i < 40; i++) void queue.enqueue(tenant(key), 100, Infinity, canRun);
    }
    expect(queue.counter('idle')).toBe(10_000);
    gate.free = 20;
    queue.pump();
    expect([count('a'), count('b'), count('idle')]).toEqual([10, 0, 10]);
    // a and idle catch up with b after 20 more, then the three share.
    gate.free = 50;
    gate.order.length = 0;
    queue.pump();
    expect([count('a'), count('b'), count('idle')]).toEqual([20, 10, 20]);
  });

  it('lifts to the counter of the tenant served last in its class when nothing waits there, and never lowers', () => {
    const queue = new FairQueue({ maxQueued: 10 });
    void queue.enqueue(tenant('busy'), 500, Infinity, always);
    expect(queue.counter('busy')).toBe(500);
    void queue.enqueue(tenant('newcomer'), 100, Infinity, never);
    expect(queue.counter('newcomer')).toBe(500);
    // Another class has its own reference: nothing was served there yet.
    void queue.enqueue(tenant('other-class', 1, 1), 100, Infinity, never);
    expect(queue.counter('other-class')).toBe(0);
    queue.charge(tenant('rich'), 900, 0);
    void queue.enqueue(tenant('rich'), 100, Infinity, never);
    expect(queue.counter('rich')).toBe(900);
  });
});

describe('fair queue capacity per model', () => {
  it("runs another tenant's entry when one tenant's model is saturated, and keeps FIFO within a tenant", async () => {
    const queue = new FairQueue({ maxQueued: 10 });
    let m1Free = false;
    const m1 = () => m1Free;
    // first has the smaller counter and the higher class, and waits on the saturated model.
    const a1 = track(queue.enqueue(tenant('first', 1, 1), 10, Infinity, m1));
    const a2 = track(queue.enqueue(tenant('first', 1, 1), 10, Infinity, always));
    queue.charge(tenant('second'), 1000, 0);
    const b1 = track(queue.enqueue(tenant('second'), 10, Infinity, never));
    let m2Free = false;
    const c1 = track(queue.enqueue(tenant('third'), 10, Infinity, () => m2Free));
    m2Free = true;
    queue.pump();
    await flush();
    expect([a1.state, a2.state, b1.state, c1.state]).toEqual(['pending', 'pending', 'pending', 'resolved']);
    m1Free = true;
    queue.pump();
    await flush();
    expect([a1.state, a2.state, b1.state]).toEqual(['resolved', 'resolved', 'pending']);
    expect(queue.length).toBe(1);
  });
});

describe('fair queue limits', () => {
  it('refuses at once with QueueFullError when maxQueued entries wait', async () => {
    const queue = new FairQueue({ maxQueued: 2 });
    void queue.enqueue(tenant('a'), 10, Infinity, never);
    void queue.enqueue(tenant('b'), 10, Infinity, never);
    const third = track(queue.enqueue(tenant('c'), 10, Infinity, never));
    await flush();
    expect(third.state).toBe('rejected');
    expect(third.reason).toBeInstanceOf(QueueFullError);
    expect(queue.length).toBe(2);
    // A request that can run without passing anyone still goes through.
    const runnable = track(queue.enqueue(tenant('c'), 10, Infinity, always));
    await flush();
    expect(runnable.state).toBe('resolved');
  });

  it('rejects with QueueTimeoutError at each deadline, earliest first, and forgets the entry', async () => {
    vi.useFakeTimers();
    const { queue, gate, canRun } = gated({ now: () => Date.now() });
    const start = Date.now();
    const late = track(queue.enqueue(tenant('a'), 10, start + 300, canRun));
    const early = track(queue.enqueue(tenant('b'), 10, start + 100, canRun));
    const middle = track(queue.enqueue(tenant('c'), 10, start + 200, canRun));
    await vi.advanceTimersByTimeAsync(99);
    expect([early.state, middle.state, late.state]).toEqual(['pending', 'pending', 'pending']);
    await vi.advanceTimersByTimeAsync(1);
    expect(early.state).toBe('rejected');
    expect(early.reason).toBeInstanceOf(QueueTimeoutError);
    expect(queue.length).toBe(2);
    await vi.advanceTimersByTimeAsync(100);
    expect(middle.reason).toBeInstanceOf(QueueTimeoutError);
    expect(late.state).toBe('pending');
    // The expired tenants left the queue: capacity goes to the one still waiting.
    gate.free = 3;
    queue.pump();
    expect(gate.order).toEqual(['a']);
    expect(queue.length).toBe(0);
    expect(queue.waitingByPriority()).toEqual(new Map([[0, 0]]));
    const already = track(queue.enqueue(tenant('d'), 10, Date.now(), never));
    await flush();
    expect(already.reason).toBeInstanceOf(QueueTimeoutError);
    expect(queue.length).toBe(0);
  });

  it('keeps its deadline timer unref so a waiting request never holds the process open', () => {
    const spy = vi.spyOn(globalThis, 'setTimeout');
    const queue = new FairQueue({ maxQueued: 10 });
    const controller = new AbortController();
    queue.enqueue(tenant('a'), 10, performance.now() + 60_000, never, controller.signal).catch(() => {});
    expect(spy).toHaveBeenCalledTimes(1);
    expect((spy.mock.results[0]!.value as NodeJS.Timeout).hasRef()).toBe(false);
    controller.abort();
  });

  it("rejects with the signal's reason when aborted and removes the entry", async () => {
    const { queue, gate } = gated();
    const controller = new AbortController();
    const asked = vi.fn(() => gate.free > 0);
    const entry = track(queue.enqueue(tenant('a'), 10, Infinity, asked, controller.signal));
    const reason = new Error('client went away');
    controller.abort(reason);
    await flush();
    expect(entry.state).toBe('rejected');
    expect(entry.reason).toBe(reason);
    expect(queue.length).toBe(0);
    asked.mockClear();
    gate.free = 1;
    queue.pump();
    expect(asked).not.toHaveBeenCalled();
    expect(gate.order).toEqual([]);
    const gone = track(queue.enqueue(tenant('a'), 10, Infinity, never, AbortSignal.abort(reason)));
    await flush();
    expect(gone.reason).toBe(reason);
    expect(queue.length).toBe(0);
  });

  it('rejects only the entry whose canRun throws', async () => {
    const { queue, gate, canRun } = gated();
    const boom = new Error('boom');
    let throws = false;
    const bad = track(
      queue.enqueue(tenant('a'), 10, Infinity, () => {
        if (throws) throw boom;
        return false;
      }),
    );
    const good = track(queue.enqueue(tenant('b'), 10, Infinity, canRun));
    throws = true;
    gate.free = 1;
    queue.pump();
    await flush();
    expect(bad.reason).toBe(boom);
    expect(good.state).toBe('resolved');
  });
});

describe('fair queue cost and memory', () => {
  it("asks only each tenant's oldest entry when pumped, and nothing when nothing waits", () => {
    const queue = new FairQueue({ maxQueued: 10 });
    const heads = [vi.fn(never), vi.fn(never)];
    const tails = [vi.fn(never), vi.fn(never), vi.fn(never)];
    void queue.enqueue(tenant('a'), 10, Infinity, heads[0]!);
    void queue.enqueue(tenant('a'), 10, Infinity, tails[0]!);
    void queue.enqueue(tenant('a'), 10, Infinity, tails[1]!);
    void queue.enqueue(tenant('b'), 10, Infinity, heads[1]!);
    void queue.enqueue(tenant('b'), 10, Infinity, tails[2]!);
    for (const fn of [...heads, ...tails]) fn.mockClear();
    queue.pump();
    expect(heads.map((fn) => fn.mock.calls.length)).toEqual([1, 1]);
    expect(tails.map((fn) => fn.mock.calls.length)).toEqual([0, 0, 0]);

    const empty = new FairQueue({ maxQueued: 10 });
    const asked = vi.fn(always);
    void empty.enqueue(tenant('a'), 10, Infinity, asked);
    asked.mockClear();
    empty.pump();
    expect(asked).not.toHaveBeenCalled();
  });

  it('forgets the least recently charged idle tenants beyond maxTenants, never a waiting one', () => {
    const queue = new FairQueue({ maxQueued: 10, maxTenants: 3 });
    queue.charge(tenant('waiting'), 100, 0);
    void queue.enqueue(tenant('waiting'), 10, Infinity, never);
    for (let i = 0; i < 5; i++) queue.charge(tenant(`t${i}`), 100, 0);
    expect(queue.counter('waiting')).toBe(100);
    expect([0, 1, 2, 3, 4].map((i) => queue.counter(`t${i}`))).toEqual([0, 0, 0, 100, 100]);
    queue.charge(tenant('t3'), 1, 0);
    queue.charge(tenant('t5'), 100, 0);
    expect(queue.counter('t3')).toBe(101);
    expect(queue.counter('t4')).toBe(0);
    expect(queue.counter('waiting')).toBe(100);
  });

  it('reports the waiting entries per class and each wait time', async () => {
    vi.useFakeTimers();
    const waits: Array<[number, string]> = [];
    const queue = new FairQueue({ maxQueued: 10, now: () => Date.now(), onDispatch: (waited, t) => waits.push([waited, t.key]) });
    let open = false;
    const canRun = () => open;
    void queue.enqueue(tenant('a'), 10, Infinity, canRun);
    void queue.enqueue(tenant('b'), 10, Infinity, canRun);
    void queue.enqueue(tenant('c', 1, 2), 10, Infinity, canRun);
    expect(queue.waitingByPriority()).toEqual(new Map([[0, 2], [2, 1]]));
    await vi.advanceTimersByTimeAsync(250);
    open = true;
    queue.pump();
    expect(waits).toEqual([[250, 'c'], [250, 'a'], [250, 'b']]);
    expect(queue.waitingByPriority()).toEqual(new Map([[0, 0], [2, 0]]));
  });
});
