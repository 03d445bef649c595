import type { UsageRow } from '../db/control-plane-store.js';
import { usageRowProblem } from './usage-sink.js';

/**
 * How usage rows travel in the Redis stream: one field per entry holding the row as compact JSON, `at` as epoch
 * milliseconds. Also the parsing of XREADGROUP / XAUTOCLAIM replies, whatever the client's RESP mapping.
 */

/** The stream entry field that holds the row. */
export const USAGE_FIELD = 'u';

export interface StreamEntry {
  id: string;
  /** Flat [field, value, ...]; null for an entry deleted while still pending (another writer stored it). */
  fields: string[] | null;
}

export function encodeUsage(row: UsageRow): string {
  return JSON.stringify({ ...row, at: row.at?.getTime() });
}

/** The row, or why the text is not one. */
export function decodeUsage(text: string | undefined): UsageRow | string {
  if (text === undefined) return `no "${USAGE_FIELD}" field`;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'not a JSON object';
  const { at, ...rest } = raw as Record<string, unknown>;
  if (at !== undefined && typeof at !== 'number') return 'at must be epoch milliseconds';
  const row = { ...rest, ...(at === undefined ? {} : { at: new Date(at) }) } as unknown as UsageRow;
  return usageRowProblem(row) ?? row;
}

export function fieldValue(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/**
 * Entries of an XREADGROUP reply: null, [[key, entries], ...] (RESP2), [key, entries, ...] (a RESP3 map in
 * ioredis' default "legacy" mapping) or { key: entries } (the "resp3" mapping).
 */
export function readReplyEntries(reply: unknown): StreamEntry[] {
  if (reply === null || reply === undefined) return [];
  if (Array.isArray(reply)) {
    if (reply.length > 0 && !Array.isArray(reply[0])) return reply.filter((_, i) => i % 2 === 1).flatMap(toEntries);
    return reply.flatMap((stream: unknown) => (Array.isArray(stream) ? toEntries(stream[1]) : []));
  }
  if (typeof reply === 'object') return Object.values(reply as Record<string, unknown>).flatMap(toEntries);
  throw new Error(`unexpected XREADGROUP reply: ${String(reply)}`);
}

/** An XAUTOCLAIM reply: [next cursor, entries, (Redis 7) deleted ids]. */
export function claimReply(reply: unknown): { next: string; entries: StreamEntry[] } {
  if (!Array.isArray(reply) || reply.length < 2) throw new Error('unexpected XAUTOCLAIM reply');
  return { next: String(reply[0]), entries: toEntries(reply[1]) };
}

function toEntries(list: unknown): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  const out: StreamEntry[] = [];
  for (const item of list) {
    // Redis 6.2 answers nil for an entry deleted while pending; Redis 7 lists those ids apart.
    if (!Array.isArray(item)) continue;
    const fields = item[1];
    out.push({ id: String(item[0]), fields: Array.isArray(fields) ? fields.map(String) : null });
  }
  return out;
}
