import type { UsageRow } from '../db/control-plane-store.js';

/** A queued row and its place in recording order. */
export interface QueuedRow {
  readonly seq: number;
  readonly row: UsageRow;
}

/**
 * The rows a sink holds until they are durable, in recording order, bounded. A row leaves only when it is settled
 * (stored, handed over, or given up and counted), so a batch in flight is still counted against the bound and
 * still waited for by flush(). Rows may settle out of order (a pipeline where some commands failed).
 */
export class RowQueue {
  private items: QueuedRow[] = [];
  private nextSeq = 1;
  private waiters: { upTo: number; resolve: () => void }[] = [];

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.items.length;
  }

  /** Queues the row; false when the queue is full (the caller decides what happens to it). */
  push(row: UsageRow): boolean {
    if (this.items.length >= this.capacity) return false;
    this.items.push({ seq: this.nextSeq++, row });
    return true;
  }

  /** The oldest `n` rows; they stay queued until settled. */
  head(n: number): QueuedRow[] {
    return this.items.slice(0, n);
  }

  /** Removes these rows and wakes the flush() callers they were the last ones for. */
  settle(done: readonly QueuedRow[]): void {
    if (done.length === 0) return;
    const isPrefix = done.every((d, i) => this.items[i]?.seq === d.seq);
    if (isPrefix) this.items.splice(0, done.length);
    else {
      const gone = new Set(done.map((d) => d.seq));
      this.items = this.items.filter((e) => !gone.has(e.seq));
    }
    this.wake();
  }

  /** Removes and returns every row (close() giving up on them). */
  takeAll(): UsageRow[] {
    const rows = this.items.map((e) => e.row);
    this.items = [];
    this.wake();
    return rows;
  }

  /** Resolves once every row queued before this call has been settled. */
  drained(): Promise<void> {
    const upTo = this.nextSeq - 1;
    if (this.oldestSeq() > upTo) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ upTo, resolve }));
  }

  private oldestSeq(): number {
    return this.items[0]?.seq ?? this.nextSeq;
  }

  private wake(): void {
    const oldest = this.oldestSeq();
    const ready = this.waiters.filter((w) => w.upTo < oldest);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.upTo >= oldest);
    for (const w of ready) w.resolve();
  }
}
