/** The bound checks both prefix index backends share, so they accept and refuse the same settings. */

/** The bound on entries: maxEntries, and maxBytes / entryBytes when a byte budget is given. Throws when it allows none. */
export function entryBound(maxEntries: number, maxBytes: number | undefined, entryBytes: number): number {
  const byBytes = maxBytes === undefined ? Infinity : Math.floor(maxBytes / entryBytes);
  const bound = Math.min(maxEntries, byBytes);
  if (!(Number.isInteger(bound) && bound >= 1)) {
    throw new RangeError(`the index must hold at least one entry (maxEntries ${maxEntries}, maxBytes ${maxBytes})`);
  }
  return bound;
}

/** Throws unless `blocks` is a valid engine capacity for setCapacity. */
export function requireCapacity(blocks: number): void {
  if (!(Number.isInteger(blocks) && blocks >= 0)) throw new RangeError(`capacity must be a non-negative integer of blocks, got ${blocks}`);
}
