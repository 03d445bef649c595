import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { type GeneratorName, GENERATOR_NAMES, generateTrace } from '../bench/replay/generators.js';
import { progressReporter } from '../bench/replay/progress.js';
import { runReplay } from '../bench/replay/replay.js';
import { formatTable, renderHtml } from '../bench/replay/report.js';
import type { IndexHashing, LoadSignal } from '../bench/replay/simulate.js';
import { formatTrace, parseTrace } from '../bench/replay/trace.js';
import { openLoop } from '../bench/replay/workload.js';
import { DEFAULT_TIMING } from '../engine-sim/timing-model.js';
import { DEFAULT_BLOCK_SIZE as INDEX_BLOCK_TOKENS } from '../kvcache/block-hash.js';
import { LocalPrefixIndex } from '../kvcache/index/local.js';
import { type PolicyName, POLICY_NAMES } from '../router/routing/pipeline.js';
import { numberFlag, parseCommandArgs, usageError } from './args.js';

const COMPARISON: readonly PolicyName[] = ['prefix-cache', 'prefix-cache-v1', 'round-robin', 'least-request', 'aibrix-prefix-cache', 'sglang-cache-aware'];

const help = `switchyard replay --trace FILE [--engines 4] [--policy P1,P2,...] [--rate-scale 1] [--limit N] [--out DIR]
switchyard replay --generate KIND [--requests 2000] [same options]

Replays a Mooncake-format trace (JSONL: timestamp ms, input_length, output_length, hash_ids of 512-token blocks)
against simulated engines (engine-sim's timing model, H100 defaults) with the router's real routing policies, on a
virtual clock: no HTTP, faster than real time. Prints a table per policy and writes report.json and report.html.

  --trace FILE        the trace to replay
  --generate KIND     write a synthetic trace instead (${GENERATOR_NAMES.join(' | ')}) into the output
                      directory and replay it
  --requests N        requests in a generated trace (default 2000)
  --engines N         simulated engines (default 4)
  --policy LIST       comma-separated policies (default ${COMPARISON.join(',')});
                      known: ${POLICY_NAMES.join(', ')}
  --rate-scale X      arrivals X times as fast as in the trace (default 1)
  --limit N           replay only the first N requests
  --load-signal S     what the gateway reports of load: pending (in-flight requests and pending prefill
                      tokens, the default) or in-flight (request counts only)
  --hashing H         how the router names blocks, as kvcache.hashing in the config: approximate (its own
                      64-token hashes, fed by its decisions; the default) or vllm (the engines' hashes, also
                      corrected by their KV events)
  --seed N            seeds the policies' tie-breaking and the generators (default 1)
  --out DIR           where to write (default .bench/replay-<timestamp>/)`;

export async function runReplayCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs(
    'replay',
    help,
    {
      trace: { type: 'string' },
      generate: { type: 'string' },
      requests: { type: 'string' },
      engines: { type: 'string' },
      policy: { type: 'string' },
      'rate-scale': { type: 'string' },
      limit: { type: 'string' },
      'load-signal': { type: 'string' },
      hashing: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
    },
    argv,
  );
  const fail = (message: string): never => usageError('replay', message, help);
  if ((flags.trace === undefined) === (flags.generate === undefined)) fail('give exactly one of --trace and --generate');
  const engines = numberFlag('replay', 'engines', flags.engines, 4, (n) => Number.isInteger(n) && n >= 1 && n <= 1024);
  const rateScale = numberFlag('replay', 'rate-scale', flags['rate-scale'], 1, (n) => n > 0);
  const limit = numberFlag('replay', 'limit', flags.limit, Infinity, (n) => Number.isInteger(n) && n >= 1);
  const seed = numberFlag('replay', 'seed', flags.seed, 1, (n) => Number.isInteger(n) && n >= 0);
  const requestCount = numberFlag('replay', 'requests', flags.requests, 2000, (n) => Number.isInteger(n) && n >= 1);
  const oneOf = <T extends string>(flag: string, value: string, allowed: readonly T[]): T =>
    allowed.includes(value as T) ? (value as T) : fail(`--${flag} must be ${allowed.join(' or ')}, got "${value}"`);
  const loadSignal = oneOf<LoadSignal>('load-signal', flags['load-signal'] ?? 'pending', ['pending', 'in-flight']);
  const hashing = oneOf<IndexHashing>('hashing', flags.hashing ?? 'approximate', ['approximate', 'vllm']);
  const policies = (flags.policy?.split(',').map((p) => p.trim()).filter((p) => p !== '') ?? [...COMPARISON]) as PolicyName[];
  for (const p of policies) if (!POLICY_NAMES.includes(p)) fail(`unknown policy "${p}"; known policies: ${POLICY_NAMES.join(', ')}`);
  if (policies.length === 0) fail('--policy names no policy');

  const out = flags.out ?? join('.bench', `replay-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  const stop = (message: string): never => {
    console.error(`switchyard replay: ${message}`);
    process.exit(1);
  };

  let traceName: string;
  let text: string;
  if (flags.generate !== undefined) {
    const kind = flags.generate as GeneratorName;
    if (!GENERATOR_NAMES.includes(kind)) fail(`unknown generator "${flags.generate}"; known: ${GENERATOR_NAMES.join(', ')}`);
    text = formatTrace(generateTrace(kind, requestCount, seed));
    traceName = join(out, `trace-${kind}.jsonl`);
    mkdirSync(out, { recursive: true });
    writeFileSync(traceName, text);
    console.error(`wrote ${traceName}`);
  } else {
    traceName = flags.trace!;
    try {
      text = readFileSync(traceName, 'utf8');
    } catch (err) {
      return stop(`cannot read ${traceName}: ${(err as Error).message}`);
    }
  }
  let trace;
  try {
    trace = parseTrace(text);
  } catch (err) {
    return stop(`${traceName}: ${(err as Error).message}`);
  }
  if (limit < trace.length) trace = trace.slice(0, limit);

  // Every engine's KV capacity in index blocks: the index never needs more entries than that.
  const indexBlockTokens = hashing === 'vllm' ? DEFAULT_TIMING.blockSize : INDEX_BLOCK_TOKENS;
  const maxEntries = engines * Math.ceil(DEFAULT_TIMING.kvCapacityTokens / indexBlockTokens);
  const progress = progressReporter();
  const report = await runReplay({
    workload: openLoop(trace, rateScale),
    traceName: basename(traceName),
    engines,
    policies,
    rateScale,
    loadSignal,
    hashing,
    seed,
    createIndex: () => new LocalPrefixIndex({ maxEntries }),
    onProgress: (policy, done, total) => progress.update(policy, done, total),
  });
  progress.end();

  mkdirSync(out, { recursive: true });
  const table = formatTable(report);
  console.log(table);
  if (report.skipped > 0) console.log(`${report.skipped} requests left out: prompt + output larger than one engine's KV cache`);
  writeFileSync(join(out, 'report.json'), `${JSON.stringify({ ...report, seed }, null, 2)}\n`);
  writeFileSync(join(out, 'report.html'), renderHtml(report));
  writeFileSync(join(out, 'table.txt'), `${table}\n`);
  console.log(`report: ${join(out, 'report.html')} (and report.json, table.txt)`);
}
