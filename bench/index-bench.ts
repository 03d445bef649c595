import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { DEFAULT_BLOCK_SIZE, promptBlockHashes } from '../kvcache/block-hash.js';
import { renderCompletionPrompt } from '../kvcache/chat-template.js';
import { LocalPrefixIndex } from '../kvcache/index/local.js';
import { RedisPrefixIndex } from '../kvcache/index/redis.js';
import { requestBlockHashes } from '../kvcache/request-blocks.js';
import { createTokenizer, type Tokenizer } from '../kvcache/tokenizers/tokenizer.js';
import type { BlockHash, PrefixIndex } from '../kvcache/types.js';

/**
 * What the KV-cache index costs the gateway, per request and per indexed block:
 *
 * - hashing: tokenizing and block-hashing 1K, 32K and 128K-token prompts, and the longest the event loop waits
 *   while requestBlockHashes works on each;
 * - lookup: match() of the same prompts, fully held by 4 of 8 engines (the worst case: the whole chain is walked,
 *   with 4 holders per block) in an index that already holds 200K other entries; in process and in Redis;
 * - memory: heap bytes per entry in process (after a forced GC), and Redis used_memory per entry.
 *
 * Redis at REDIS_URL, else redis://127.0.0.1:6379; its keys go under a fresh prefix and are deleted at the end.
 * Every loop is bounded; one run takes about 15 seconds.
 */

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PROMPT_TOKENS = [1024, 32 * 1024, 128 * 1024];
const RUNS = { 1024: 200, 32768: 50, 131072: 20 } as Record<number, number>;
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const ENGINES = Array.from({ length: 8 }, (_, i) => `http://10.0.0.${i + 1}:8000`);
const BACKGROUND_ENTRIES = 200_000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

interface Summary {
  min: number;
  median: number;
  max: number;
}

function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]!, max: sorted[sorted.length - 1]! };
}

const ms = (s: Summary): string => `${s.min.toFixed(3).padStart(8)} ${s.median.toFixed(3).padStart(8)} ${s.max.toFixed(3).padStart(8)}`;

async function time(runs: number, fn: () => unknown): Promise<Summary> {
  for (let i = 0; i < Math.min(5, runs); i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    samples.push(performance.now() - start);
  }
  return summarize(samples);
}

/** English-like text of about `tokens` tokens for the tokenizer. */
function textOfTokens(tokenizer: Tokenizer, tokens: number): string {
  const words = ['the', 'router', 'sends', 'each', 'request', 'to', 'an', 'engine', 'that', 'already', 'holds', 'its', 'prefix,', 'so', 'prefill', 'is', 'skipped.', 'Blocks', 'of', 'tokens', 'are', 'hashed', 'in', 'a', 'chain', '2048', 'times.\n'];
  let text = '';
  for (let i = 0; text.length < tokens * 6; i++) text += (i === 0 ? '' : ' ') + words[(i * 7 + (i >> 5)) % words.length];
  // Trim to the token count with one measurement: the ratio is stable over long text.
  const ratio = tokenizer.encode(text).length / text.length;
  return text.slice(0, Math.floor(tokens / ratio));
}

async function hashing(): Promise<void> {
  console.log(`\nHashing (block ${DEFAULT_BLOCK_SIZE}), ms: min median max`);
  console.log('tokenizer     tokens   tokenize                    hash (promptBlockHashes)    requestBlockHashes          longest event-loop stall');
  for (const name of ['approximate', 'gpt-4o'] as const) {
    const tokenizer = await createTokenizer(name);
    for (const n of PROMPT_TOKENS) {
      const text = textOfTokens(tokenizer, n);
      const tokens = tokenizer.encode(renderCompletionPrompt(text));
      const options = { tokenizer, blockSize: DEFAULT_BLOCK_SIZE, namespace: MODEL };
      const runs = Math.max(5, Math.floor(RUNS[n]! / 4));
      const tokenize = await time(runs, () => tokenizer.encode(renderCompletionPrompt(text)));
      const hash = await time(RUNS[n]!, () => promptBlockHashes(tokens, options));
      const whole = await time(runs, () => requestBlockHashes({ prompt: text }, options));
      const stalls: number[] = [];
      for (let i = 0; i < runs; i++) stalls.push(await longestStall(() => requestBlockHashes({ prompt: text }, options)));
      console.log(`${name.padEnd(12)} ${String(tokens.length).padStart(7)}   ${ms(tokenize)}  ${ms(hash)}  ${ms(whole)}  ${ms(summarize(stalls))}`);
    }
  }
  console.log('(stall: the longest gap between two turns of the event loop while requestBlockHashes ran, per run)');
}

/** Runs `work` while a setImmediate loop measures the longest time the event loop was held. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let longest = 0;
  let last = performance.now();
  let running = true;
  const tick = (): void => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await work();
  running = false;
  await new Promise((resolve) => setImmediate(resolve));
  return longest;
}

/**
 * Records the chains, letting a Redis index flush every few batches: recording faster than Redis takes writes
 * would drop them, as it must in the gateway.
 */
async function recordAll(index: PrefixIndex, records: Iterable<readonly [string, readonly BlockHash[]]>): Promise<void> {
  let sinceFlush = 0;
  for (const [engine, hashes] of records) {
    index.recordStored(engine, hashes);
    sinceFlush += hashes.length;
    if (index instanceof RedisPrefixIndex && sinceFlush >= 16_384) {
      await index.flush();
      sinceFlush = 0;
    }
  }
  if (index instanceof RedisPrefixIndex) await index.flush();
}

/** Distinct chains of 16 blocks: unrelated prompts that fill the index around the measured one. */
function* background(entries: number): Generator<readonly [string, BlockHash[]]> {
  for (let i = 0; i < entries / 16; i++) {
    yield [ENGINES[i % ENGINES.length]!, Array.from({ length: 16 }, (_, j) => (BigInt(i + 1) << 24n) | BigInt(j))];
  }
}

async function lookups(): Promise<void> {
  console.log('\nLookup: match() of a prompt held whole by 4 of 8 engines, index holding 200K other entries; ms: min median max');
  console.log('backend  block   tokens  hashes   match');
  const keyPrefix = `switchyard-bench:${randomUUID()}:`;
  const local = new LocalPrefixIndex({ maxEntries: 2_000_000 });
  const redis = new RedisPrefixIndex({ redis: REDIS_URL, keyPrefix, maxEntries: 2_000_000 });
  await recordAll(local, background(BACKGROUND_ENTRIES));
  await recordAll(redis, background(BACKGROUND_ENTRIES));
  try {
    for (const blockSize of [16, DEFAULT_BLOCK_SIZE]) {
      for (const n of PROMPT_TOKENS) {
        const tokens = Array.from({ length: n }, (_, i) => (i * 2654435761) % 128000);
        const hashes = promptBlockHashes(tokens, { blockSize, namespace: `${MODEL}#${blockSize}` });
        const holders = ENGINES.slice(0, 4).map((engine) => [engine, hashes] as const);
        await recordAll(local, holders);
        await recordAll(redis, holders);
        for (const [name, index] of [['local', local], ['redis', redis]] as const) {
          const result = await index.match(hashes);
          if (result.size !== 4 || result.get(ENGINES[0]!) !== hashes.length) throw new Error(`${name}: unexpected match ${JSON.stringify([...result])}`);
          const lookup = await time(RUNS[n]!, () => index.match(hashes));
          console.log(`${name.padEnd(8)} ${String(blockSize).padStart(5)} ${String(n).padStart(8)} ${String(hashes.length).padStart(7)}  ${ms(lookup)}`);
        }
      }
    }
  } finally {
    await redis.close();
    await deleteKeys(keyPrefix);
  }
}

async function memory(): Promise<void> {
  console.log('\nMemory per entry (one entry = one block held by one engine)');
  for (const holders of [1, 4]) {
    const { bytes, entries, blocks } = await localBytes(400_000, holders);
    console.log(`local  ${holders} engine(s) per block: ${(bytes / entries).toFixed(1)} bytes per entry (heap + array buffers after GC; ${entries} entries, ${blocks} blocks)`);
  }
  for (const holders of [1, 4]) {
    const { bytes, entries } = await redisBytes(100_000, holders);
    console.log(`redis  ${holders} engine(s) per block: ${(bytes / entries).toFixed(1)} bytes per entry (INFO used_memory delta; ${entries} entries)`);
  }
}

/** `count` entries as chains of 16 blocks, `holders` engines holding each block. */
function entryRecords(count: number, holders: number): (readonly [string, BlockHash[]])[] {
  const chains = Array.from({ length: Math.floor(count / holders / 16) }, (_, i) => Array.from({ length: 16 }, (_, j) => (BigInt(i + 1) << 8n) | BigInt(j)));
  return ENGINES.slice(0, holders).flatMap((engine) => chains.map((chain) => [engine, chain] as const));
}

// A function of its own, so that nothing of one measurement is still reachable during the next.
async function localBytes(count: number, holders: number): Promise<{ bytes: number; entries: number; blocks: number }> {
  // The hashes exist before the index does, as they do in the gateway: only the index's own memory is measured.
  const records = entryRecords(count, holders);
  gc();
  const before = process.memoryUsage();
  const index = new LocalPrefixIndex({ maxEntries: 10_000_000 });
  await recordAll(index, records);
  gc();
  const after = process.memoryUsage();
  return { bytes: after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers), ...index.stats() };
}

async function redisBytes(count: number, holders: number): Promise<{ bytes: number; entries: number }> {
  const keyPrefix = `switchyard-bench:${randomUUID()}:`;
  const admin = new Redis(REDIS_URL);
  try {
    const before = await usedMemory(admin);
    const index = new RedisPrefixIndex({ redis: REDIS_URL, keyPrefix, maxEntries: 10_000_000 });
    await recordAll(index, entryRecords(count, holders));
    await index.close();
    const entries = await admin.zcard(`${keyPrefix}lru`);
    return { bytes: (await usedMemory(admin)) - before, entries };
  } finally {
    await admin.quit();
    await deleteKeys(keyPrefix);
  }
}

async function usedMemory(admin: Redis): Promise<number> {
  const info = await admin.info('memory');
  const match = /used_memory:(\d+)/.exec(info);
  if (match === null) throw new Error('INFO memory has no used_memory');
  return Number(match[1]);
}

async function deleteKeys(keyPrefix: string): Promise<void> {
  const admin = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    // Buffers: block keys are binary, and a key read back as UTF-8 text would not name the key any more.
    const [next, keys] = await admin.scanBuffer(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await admin.unlink(...keys);
    cursor = next.toString();
  } while (cursor !== '0');
  await admin.quit();
}

console.log(`index-bench: node ${process.version}, Redis at ${REDIS_URL}`);
await hashing();
await lookups();
await memory();
