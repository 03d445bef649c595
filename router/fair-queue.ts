/**
 * Where requests wait when every engine that could serve them is saturated, and the order they leave in.
 *
 * Fairness is the Virtual Token Counter of "Fairness in Serving Large Language Models" (Sheng et al., OSDI '24),
 * weighted, under strict priority classes:
 * - every tenant has a counter of the service it received: (prompt * promptWeight + completion * completionWeight)
 *   / tenant weight, so a tenant of weight 2 reaches the same counter with twice the tokens;
 * - dispatch takes the highest priority class with an entry that can run, in it the waiting tenant with the
 *   smallest counter, and that tenant's oldest entry (FIFO within a tenant);
 * - the counter lift, so that idleness is not banked as credit: a tenant that joins with nothing waiting gets
 *   max(its counter, the smallest counter among the tenants waiting in its class), or when none waits there,
 *   max(its counter, the counter of the tenant served last in its class). That is the paper's rule
 *   (Algorithm 2: "the last client that left the queue"; the artifact's vtc_req_queue.py keeps only the first
 *   half). Requests that went through at once count as served, which is why every request should go through
 *   enqueue() rather than around it.
 *
 * Counters live in this process: each router replica is fair over the requests it holds.
 */

export interface QueueTenant {
  readonly key: string;
  /** Share of service: a tenant of weight 2 gets twice the tokens of one of weight 1 while both wait. Above 0. */
  readonly weight: number;
  /** Class: a runnable entry of a higher class always leaves before any of a lower one. */
  readonly priority: number;
}

export interface FairQueueOptions {
  /** Entries that may wait at once; one more is refused with QueueFullError. */
  readonly maxQueued: number;
  readonly promptWeight?: number;
  readonly completionWeight?: number;
  /**
   * Tenants with nothing waiting whose counters are kept, the least recently charged forgotten first. A forgotten
   * tenant restarts at 0 and is lifted when it queues again, so only a debt older than that many others is lost.
   */
  readonly maxTenants?: number;
  /** Milliseconds; deadlines passed to enqueue() are on this clock. */
  readonly now?: () => number;
  /** Called at every dispatch, 0 for a request that went through at once: feeds the queue-wait histogram. */
  readonly onDispatch?: (waitedMs: number, tenant: QueueTenant) => void;
}

export class QueueFullError extends Error {
  constructor(maxQueued: number) {
    super(`the fair queue is full (${maxQueued} requests waiting)`);
    this.name = 'QueueFullError';
  }
}

export class QueueTimeoutError extends Error {
  constructor() {
    super('the request waited in the fair queue past its deadline');
    this.name = 'QueueTimeoutError';
  }
}

interface TenantState {
  tenant: QueueTenant;
  counter: number;
  /** Class it waits in; only changes while nothing of it waits, so the lift and the order see one class. */
  priority: number;
  /** Its waiting entries, oldest first; non-empty exactly when the tenant is in #backlogged. */
  readonly waiting: Entry[];
}

interface Entry {
  readonly state: TenantState;
  readonly estimate: number;
  readonly deadline: number;
  readonly enqueuedAt: number;
  /** Arrival order: breaks ties between tenants of equal counters in favour of the older head. */
  readonly seq: number;
  readonly canRun: () => boolean;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
  queued: boolean;
}

interface ClassState {
  waiting: number;
  /** Reference for the lift when nothing waits in the class. Held by reference: it outlives its eviction. */
  lastServed: TenantState | undefined;
}

export class FairQueue {
  readonly #maxQueued: number;
  readonly #promptWeight: number;
  readonly #completionWeight: number;
  readonly #maxTenants: number;
  readonly #now: () => number;
  readonly #onDispatch: ((waitedMs: number, tenant: QueueTenant) => void) | undefined;

  /** Every known tenant, least recently touched first (a Map keeps insertion order: touching re-inserts). */
  readonly #tenants = new Map<string, TenantState>();
  readonly #backlogged = new Set<TenantState>();
  /** Priority classes seen; as few as the configured priorities. */
  readonly #classes = new Map<number, ClassState>();
  #queued = 0;
  #seq = 0;

  /** Waiting entries by deadline; dispatched and aborted ones are dropped lazily when they reach the top. */
  #deadlines = new Heap<Entry>(byDeadline);
  /** One timer, for the earliest deadline. */
  #timer: NodeJS.Timeout | undefined;
  #timerAt = 0;

  #pumping = false;
  #pumpAgain = false;

  constructor(opts: FairQueueOptions) {
    this.#maxQueued = opts.maxQueued;
    this.#promptWeight = opts.promptWeight ?? 1;
    this.#completionWeight = opts.completionWeight ?? 2;
    this.#maxTenants = opts.maxTenants ?? 10_000;
    this.#now = opts.now ?? (() => performance.now());
    this.#onDispatch = opts.onDispatch;
  }

  /** Entries waiting now. */
  get length(): number {
    return this.#queued;
  }

  /** Entries waiting per priority class, 0 for classes seen before, so a gauge per class goes back to 0. */
  waitingByPriority(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [priority, c] of this.#classes) out.set(priority, c.waiting);
    return out;
  }

  /**
   * Waits for the request's turn. Resolves at once (after charging) when nothing of its tenant waits and canRun()
   * says yes: other tenants' entries are not passed over, since the queue is pumped first and whatever still waits
   * after that cannot run. Otherwise the entry queues and canRun() is asked whenever the queue pumps and the entry
   * is its tenant's oldest; it resolves when that says yes in its turn. Rejects at once with QueueFullError when it
   * would have to wait and maxQueued entries already do, with QueueTimeoutError when deadlineMs (absolute, on the `now` clock) passes while it
   * waits, with the signal's reason when aborted. Dispatch charges estimatedPromptTokens to the tenant.
   */
  enqueue(tenant: QueueTenant, estimatedPromptTokens: number, deadlineMs: number, canRun: () => boolean, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.pump();
    const state = this.#touch(tenant);
    if (state.waiting.length === 0 && canRun()) {
      this.#lift(state);
      this.#serve(state, estimatedPromptTokens, 0);
      return Promise.resolve();
    }
    if (this.#queued >= this.#maxQueued) return Promise.reject(new QueueFullError(this.#maxQueued));
    const now = this.#now();
    if (now >= deadlineMs) return Promise.reject(new QueueTimeoutError());

    return new Promise<void>((resolve, reject) => {
      if (state.waiting.length === 0) {
        this.#lift(state);
        this.#backlogged.add(state);
      }
      const entry: Entry = {
        state,
        estimate: estimatedPromptTokens,
        deadline: deadlineMs,
        enqueuedAt: now,
        seq: this.#seq++,
        canRun,
        signal,
        onAbort: () => this.#remove(entry, signal?.reason),
        resolve,
        reject,
        queued: true,
      };
      state.waiting.push(entry);
      this.#queued++;
      this.#class(state.priority).waiting++;
      signal?.addEventListener('abort', entry.onAbort, { once: true });
      // Dispatched and aborted entries stay in the heap until they reach its top; rebuild before they dominate it.
      if (this.#deadlines.size > 2 * this.#queued + 64) {
        this.#deadlines = new Heap(byDeadline, [...this.#backlogged].flatMap((s) => s.waiting));
      } else {
        this.#deadlines.push(entry);
      }
      this.#arm();
    });
  }

  /**
   * Dispatches waiting entries in fair order while their canRun() says yes; call it whenever capacity may have
   * freed (an engine released a slot, a metrics scrape). A tenant whose oldest entry cannot run is passed over for
   * this pump, so a saturated model does not hold back tenants of another one. Asks each waiting tenant's oldest
   * entry at least once: O((tenants + dispatches) log tenants); nothing at all when nothing waits.
   */
  pump(): void {
    if (this.#queued === 0) return;
    // canRun() and onDispatch may come back here: the pump in progress goes round again instead.
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        this.#pumpOnce();
      } while (this.#pumpAgain && this.#queued > 0);
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Adds service to a tenant's counter. The queue charges the prompt estimate at dispatch; the gateway charges the
   * completion tokens and the prompt correction (real minus estimate, possibly negative) when the answer ends.
   * Given a key alone, the weight is the one last seen for that tenant, 1 for a tenant never seen.
   */
  charge(tenant: QueueTenant | string, promptTokens: number, completionTokens: number): void {
    const state = this.#touch(typeof tenant === 'string' ? (this.#tenants.get(tenant)?.tenant ?? { key: tenant, weight: 1, priority: 0 }) : tenant);
    state.counter += (promptTokens * this.#promptWeight + completionTokens * this.#completionWeight) / state.tenant.weight;
  }

  /** The tenant's virtual token counter; 0 for one never seen or forgotten. */
  counter(tenantKey: string): number {
    return this.#tenants.get(tenantKey)?.counter ?? 0;
  }

  #pumpOnce(): void {
    const heap = new Heap<TenantState>(servedFirst, [...this.#backlogged]);
    for (let state = heap.pop(); state !== undefined; state = heap.pop()) {
      const head = state.waiting[0];
      // Emptied by an abort from inside a canRun() of this pump.
      if (head === undefined) continue;
      let runs: boolean;
      try {
        runs = head.canRun();
      } catch (err) {
        this.#remove(head, err);
        if (state.waiting.length > 0) heap.push(state);
        continue;
      }
      // Blocked for the rest of this pump: dispatching others only takes capacity away.
      if (!runs) continue;
      state.waiting.shift();
      this.#leave(head);
      // Resolved before the observer runs, so that an observer that throws cannot strand the request.
      head.resolve();
      this.#serve(state, head.estimate, this.#now() - head.enqueuedAt);
      if (state.waiting.length > 0) heap.push(state);
    }
  }

  #serve(state: TenantState, estimate: number, waitedMs: number): void {
    state.counter += (estimate * this.#promptWeight) / state.tenant.weight;
    this.#class(state.priority).lastServed = state;
    this.#onDispatch?.(waitedMs, state.tenant);
  }

  /** Takes a waiting entry out for good (abort, deadline, a throwing canRun) and rejects it. */
  #remove(entry: Entry, reason: unknown): void {
    if (!entry.queued) return;
    const waiting = entry.state.waiting;
    waiting.splice(waiting.indexOf(entry), 1);
    this.#leave(entry);
    entry.reject(reason);
  }

  /** Bookkeeping for an entry already out of its tenant's list. */
  #leave(entry: Entry): void {
    entry.queued = false;
    entry.signal?.removeEventListener('abort', entry.onAbort);
    this.#queued--;
    this.#class(entry.state.priority).waiting--;
    if (entry.state.waiting.length === 0) this.#backlogged.delete(entry.state);
    if (this.#queued === 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#deadlines = new Heap(byDeadline);
    }
  }

  /** The counter lift (see the top of the file), for a tenant about to join with nothing waiting. */
  #lift(state: TenantState): void {
    let floor: number | undefined;
    for (const other of this.#backlogged) {
      if (other.priority === state.priority && (floor === undefined || other.counter < floor)) floor = other.counter;
    }
    floor ??= this.#classes.get(state.priority)?.lastServed?.counter;
    if (floor !== undefined && floor > state.counter) state.counter = floor;
  }

  /** The tenant's state, created at 0 when unknown, marked most recently used; forgets the oldest idle tenants. */
  #touch(tenant: QueueTenant): TenantState {
    let state = this.#tenants.get(tenant.key);
    if (state === undefined) {
      state = { tenant, counter: 0, priority: tenant.priority, waiting: [] };
      for (const [key, old] of this.#tenants) {
        if (this.#tenants.size < this.#maxTenants) break;
        if (old.waiting.length === 0) this.#tenants.delete(key);
      }
    } else {
      this.#tenants.delete(tenant.key);
      state.tenant = tenant;
      if (state.waiting.length === 0) state.priority = tenant.priority;
    }
    this.#tenants.set(tenant.key, state);
    return state;
  }

  #class(priority: number): ClassState {
    let c = this.#classes.get(priority);
    if (c === undefined) {
      c = { waiting: 0, lastServed: undefined };
      this.#classes.set(priority, c);
    }
    return c;
  }

  /** Keeps the timer on the earliest live deadline. Unref'd: a waiting request never keeps the process alive. */
  #arm(): void {
    let top = this.#deadlines.peek();
    while (top !== undefined && !top.queued) {
      this.#deadlines.pop();
      top = this.#deadlines.peek();
    }
    if (top === undefined || (this.#timer !== undefined && this.#timerAt <= top.deadline)) return;
    clearTimeout(this.#timer);
    this.#timerAt = top.deadline;
    this.#timer = setTimeout(this.#expire, Math.min(maxTimerMs, Math.max(0, Math.ceil(top.deadline - this.#now()))));
    this.#timer.unref();
  }

  readonly #expire = (): void => {
    this.#timer = undefined;
    const now = this.#now();
    for (let top = this.#deadlines.peek(); top !== undefined && (!top.queued || top.deadline <= now); top = this.#deadlines.peek()) {
      this.#deadlines.pop();
      this.#remove(top, new QueueTimeoutError());
    }
    this.#arm();
  };
}

/** setTimeout's limit: a longer delay (a far or infinite deadline) would fire after 1 ms, and then again. */
const maxTimerMs = 2 ** 31 - 1;

/** Dispatch order between waiting tenants: higher class, then smaller counter, then older head. */
function servedFirst(a: TenantState, b: TenantState): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.counter !== b.counter) return a.counter < b.counter;
  return (a.waiting[0]?.seq ?? 0) < (b.waiting[0]?.seq ?? 0);
}

function byDeadline(a: Entry, b: Entry): boolean {
  return a.deadline < b.deadline;
}

/** A binary heap; `before(a, b)` says a comes out first. */
class Heap<T> {
  readonly #items: T[];
  readonly #before: (a: T, b: T) => boolean;

  constructor(before: (a: T, b: T) => boolean, items: T[] = []) {
    this.#before = before;
    this.#items = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  get size(): number {
    return this.#items.length;
  }

  peek(): T | undefined {
    return this.#items[0];
  }

  push(item: T): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      this.#down(0);
    }
    return top;
  }

  #down(i: number): void {
    const items = this.#items;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let first = i;
      if (left < items.length && this.#before(items[left]!, items[first]!)) first = left;
      if (right < items.length && this.#before(items[right]!, items[first]!)) first = right;
      if (first === i) return;
      [items[i], items[first]] = [items[first]!, items[i]!];
      i = first;
    }
  }
}
