/**
 * Drives a TimingModel against the wall clock, `timeScale` times faster than real time.
 *
 * The engine keeps its own virtual clock that advances by exactly each step's duration, and sleeps only while it
 * is ahead of the scaled wall clock. Timers fire no finer than ~1 ms, which at time-scale 50 is 50 virtual ms,
 * several decode steps: so when the loop wakes up late it runs the overdue steps back to back instead of
 * stretching each one to a timer tick, and the simulated throughput stays what the model says.
 *
 * Arrivals are stamped with the scaled wall clock and enter the model only once the engine clock reaches them, so
 * a request never joins a step that started before it arrived, even while the engine is catching up.
 *
 * A step's request events and cache events are delivered together when the step ends on the wall clock.
 */

import { Deque } from './deque.js';
import type { CacheEvent, EngineEvent, ModelRequest, TimingModel } from './timing-model.js';

// Overdue steps run back to back, but never so many that HTTP I/O starves.
const MAX_STEPS_PER_TURN = 64;

interface Arrival {
  readonly request: ModelRequest;
  readonly atMs: number;
}

export class EngineLoop {
  private readonly arrivals = new Deque<Arrival>();
  private readonly realStartMs = performance.now();
  private engineMs = 0;
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly model: TimingModel,
    private readonly timeScale: number,
    private readonly onEvents: (events: readonly EngineEvent[], cacheEvents: readonly CacheEvent[]) => void,
  ) {
    if (!(Number.isFinite(timeScale) && timeScale > 0)) throw new RangeError(`timeScale must be a positive number, got ${timeScale}`);
  }

  /** Virtual milliseconds since the loop was created. */
  now(): number {
    return (performance.now() - this.realStartMs) * this.timeScale;
  }

  /** Queues a request arriving now; returns its virtual arrival time. */
  submit(request: ModelRequest): number {
    const atMs = this.now();
    this.arrivals.pushBack({ request, atMs });
    this.wake();
    return atMs;
  }

  abort(id: string): void {
    for (const arrival of this.arrivals) {
      if (arrival.request.id !== id) continue;
      this.arrivals.remove(arrival);
      return;
    }
    this.model.abort(id);
  }

  /**
   * Resets the model's prefix cache between steps, so its AllBlocksCleared follows every event of the steps before.
   * False while the engine has anything to run or deliver (vLLM refuses while requests hold blocks).
   */
  resetPrefixCache(): boolean {
    if (this.scheduled || !this.model.resetPrefixCache()) return false;
    this.onEvents([], this.model.takeCacheEvents());
    return true;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private wake(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  private run(): void {
    this.timer = undefined;
    for (let steps = 0; steps < MAX_STEPS_PER_TURN; steps++) {
      if (this.closed) return;
      this.admitArrivals();
      if (this.model.idle) {
        const next = this.arrivals.peekFront();
        if (next === undefined) {
          this.scheduled = false;
          return;
        }
        this.engineMs = Math.max(this.engineMs, next.atMs);
        continue;
      }
      const { durationMs, events } = this.model.step(this.engineMs);
      const cacheEvents = this.model.takeCacheEvents();
      this.engineMs += durationMs;
      const aheadRealMs = (this.engineMs - this.now()) / this.timeScale;
      if (aheadRealMs > 0) {
        this.timer = setTimeout(() => {
          this.onEvents(events, cacheEvents);
          this.run();
        }, aheadRealMs);
        return;
      }
      if (events.length > 0 || cacheEvents.length > 0) this.onEvents(events, cacheEvents);
    }
    setImmediate(() => this.run());
  }

  private admitArrivals(): void {
    for (let next = this.arrivals.peekFront(); next !== undefined && next.atMs <= this.engineMs; next = this.arrivals.peekFront()) {
      this.arrivals.shift();
      this.model.submit(next.request);
    }
  }
}
