/**
 * A ring-buffer double-ended queue. The scheduler's waiting queue takes new requests at the back and preempted
 * ones at the front; Array#shift/unshift are O(n), which a replay with thousands of waiting requests would feel.
 */
export class Deque<T> {
  private items: (T | undefined)[] = new Array(16);
  private start = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  peekFront(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.start];
  }

  pushBack(item: T): void {
    this.growIfFull();
    this.items[(this.start + this.count) & (this.items.length - 1)] = item;
    this.count++;
  }

  pushFront(item: T): void {
    this.growIfFull();
    this.start = (this.start - 1) & (this.items.length - 1);
    this.items[this.start] = item;
    this.count++;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.start];
    this.items[this.start] = undefined;
    this.start = (this.start + 1) & (this.items.length - 1);
    this.count--;
    return item;
  }

  /** Removes the first occurrence of `item`; O(n), used only for aborts. */
  remove(item: T): boolean {
    for (let i = 0; i < this.count; i++) {
      if (this.at(i) !== item) continue;
      for (let j = i; j < this.count - 1; j++) this.items[this.index(j)] = this.at(j + 1);
      this.items[this.index(this.count - 1)] = undefined;
      this.count--;
      return true;
    }
    return false;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.count; i++) yield this.at(i);
  }

  private at(i: number): T {
    return this.items[this.index(i)] as T;
  }

  private index(i: number): number {
    return (this.start + i) & (this.items.length - 1);
  }

  // Capacity stays a power of two so indices wrap with a mask.
  private growIfFull(): void {
    if (this.count < this.items.length) return;
    const grown: (T | undefined)[] = new Array(this.items.length * 2);
    for (let i = 0; i < this.count; i++) grown[i] = this.at(i);
    this.items = grown;
    this.start = 0;
  }
}
