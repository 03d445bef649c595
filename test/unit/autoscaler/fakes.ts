import type { Actuator } from '../../../autoscaler/actuator.js';
import type { MetricReading, MetricSource } from '../../../autoscaler/sources/source.js';

/** An in-memory actuator: replicas change when scale() is called (unless `adopt` is false). */
export class FakeActuator implements Actuator {
  readonly kind = 'fake';
  replicas: number;
  /** scale() calls, in order. */
  readonly calls: [target: string, replicas: number][] = [];
  /** When false, scale() is accepted but the count does not change (a stuck rollout). */
  adopt = true;
  failCurrent: Error | undefined;
  failScale: Error | undefined;
  closed = false;

  constructor(replicas: number) {
    this.replicas = replicas;
  }

  async currentReplicas(): Promise<number> {
    if (this.failCurrent !== undefined) throw this.failCurrent;
    return this.replicas;
  }

  async scale(target: string, replicas: number): Promise<void> {
    this.calls.push([target, replicas]);
    if (this.failScale !== undefined) throw this.failScale;
    if (this.adopt) this.replicas = replicas;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A source that answers what `next` returns (or throws). */
export class FakeSource implements MetricSource {
  readonly description = 'fake source';
  reads = 0;
  closed = false;
  next: () => MetricReading;

  constructor(next: () => MetricReading) {
    this.next = next;
  }

  async read(): Promise<MetricReading> {
    this.reads++;
    return this.next();
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A per-replica average over `replicas` engines. */
export const avg = (value: number, replicas?: number): MetricReading => ({ basis: 'average', value, replicas, detail: `fake ${value}` });

/** A clock the test moves. */
export class FakeClock {
  t: number;
  constructor(start = Date.UTC(2025, 0, 1)) {
    this.t = start;
  }
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}
