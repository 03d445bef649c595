import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CLOSED_LOOP_DEFAULTS, CLOSED_LOOP_NAMES, type ClosedLoopName, closedLoopWorkload } from '../bench/replay/closed-loop.js';
import { type GeneratorName, GENERATOR_NAMES, generateTrace } from '../bench/replay/generators.js';
import { progressReporter } from '../bench/replay/progress.js';
import { type ReplayPolicy, runReplay } from '../bench/replay/replay.js';
import { formatTable, renderHtml, type ReplayReport } from '../bench/replay/report.js';
import type { IndexHashing, LoadSignal } from '../bench/replay/simulate.js';
import { formatTrace, parseTrace } from '../bench/replay/trace.js';
import { openLoop, type Workload } from '../bench/replay/workload.js';
import { ConfigError, loadConfig } from '../core/config.js';
import { DEFAULT_TIMING } from '../engine-sim/timing-model.js';
import { DEFAULT_BLOCK_SIZE as INDEX_BLOCK_TOKENS } from '../kvcache/block-hash.js';
import { LocalPrefixIndex } from '../kvcache/index/local.js';
import { createPipeline, type PolicyName, POLICY_NAMES } from '../router/routing/pipeline.js';
import { numberFlag, parseCommandArgs, usageError } from './args.js';

const COMPARISON: readonly PolicyName[] = ['prefix-cache', 'prefix-cache-v1', 'round-robin', 'least-request', 'aibrix-prefix-cache', 'sglang-cache-aware'];

const help = `switchyard replay --trace FILE [--engines 4] [--policy P1,P2,...] [--config FILE] [--rate-scale 1] [--limit N] [--out DIR]
switchyard replay --generate KIND [--requests 2000] [--users 32] [--think-ms 1000] [same options]

Replays a Mooncake-format trace (JSONL: timestamp ms, input_length, output_length, hash_ids of 512-token blocks),
or a generated workload, against simulated engines (engine-sim's timing model, H100 defaults) with the router's
real routing policies, on a virtual clock: no HTTP, faster than real time. Prints latency, hits and load per
policy, and how far the routing's predictions were from the outcomes; writes report.json and report.html.

  --trace FILE        the trace to replay
  --generate KIND     a synthetic workload instead. Open loop, written as a trace into the output directory
                      and replayed: ${GENERATOR_NAMES.join(' | ')}. Closed loop, users who each send their
                      next request when their last one ended plus a think time:
                      ${CLOSED_LOOP_NAMES.join(' | ')}
  --requests N        requests to generate, all users together (default 2000)
  --users N           closed loop: how many users (default ${CLOSED_LOOP_DEFAULTS.users})
  --think-ms MS       closed loop: mean think time between an answer and the user's next request,
                      exponential, 0 allowed (default ${CLOSED_LOOP_DEFAULTS.thinkMs})
  --prompts K         zipf-prompts: how many system prompts (default ${CLOSED_LOOP_DEFAULTS.prompts})
  --duration-s S      closed loop: no request is sent S virtual seconds after the first (default: no limit)
  --engines N         simulated engines (default 4)
  --policy LIST       comma-separated policies (default ${COMPARISON.join(',')};
                      none when --config is given); known: ${POLICY_NAMES.join(', ')}
  --config FILE       a switchyard config file: its routing block (policy, filters, scorers, picker) is
                      replayed as one more policy, named after the file
  --rate-scale X      trace and open loop: arrivals X times as fast as in the trace (default 1)
  --limit N           trace and open loop: replay only the first N requests
  --load-signal S     what the gateway reports of load: pending (in-flight requests and pending prefill
                      tokens, the default) or in-flight (request counts only)
  --hashing H         how the router names blocks, as kvcache.hashing in the config: approximate (its own
                      64-token hashes, fed by its decisions; the default) or vllm (the engines' hashes, also
                      corrected by their KV events)
  --seed N            seeds the policies' tie-breaking and the generators (default 1)
  --out DIR           where to write (default .bench/replay-<timestamp>/)`;

const fail = (message: string): never => usageError('replay', message, help);

/** Exits 1 naming what could not be used: the flags were right, the file is not. */
const stop = (message: string): never => {
  console.error(`switchyard replay: ${message}`);
  process.exit(1);
};

export async function runReplayCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs(
    'replay',
    help,
    {
      trace: { type: 'string' },
      generate: { type: 'string' },
      requests: { type: 'string' },
      users: { type: 'string' },
      'think-ms': { type: 'string' },
      prompts: { type: 'string' },
      'duration-s': { type: 'string' },
      engines: { type: 'string' },
      policy: { type: 'string' },
      config: { type: 'string' },
      'rate-scale': { type: 'string' },
      limit: { type: 'string' },
      'load-signal': { type: 'string' },
      hashing: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
    },
    argv,
  );
  if ((flags.trace === undefined) === (flags.generate === undefined)) fail('give exactly one of --trace and --generate');
  const engines = numberFlag('replay', 'engines', flags.engines, 4, (n) => Number.isInteger(n) && n >= 1 && n <= 1024);
  const seed = numberFlag('replay', 'seed', flags.seed, 1, (n) => Number.isInteger(n) && n >= 0);
  const oneOf = <T extends string>(flag: string, value: string, allowed: readonly T[]): T =>
    allowed.includes(value as T) ? (value as T) : fail(`--${flag} must be ${allowed.join(' or ')}, got "${value}"`);
  const loadSignal = oneOf<LoadSignal>('load-signal', flags['load-signal'] ?? 'pending', ['pending', 'in-flight']);
  const hashing = oneOf<IndexHashing>('hashing', flags.hashing ?? 'approximate', ['approximate', 'vllm']);
  const policies = replayPolicies(flags.policy, flags.config);
  const out = flags.out ?? join('.bench', `replay-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  const { workload, traceName, rateScale, closedLoop, maxDurationMs, expected } = chooseWorkload(flags, seed, out);

  // Every engine's KV capacity in index blocks: the index never needs more entries than that.
  const indexBlockTokens = hashing === 'vllm' ? DEFAULT_TIMING.blockSize : INDEX_BLOCK_TOKENS;
  const maxEntries = engines * Math.ceil(DEFAULT_TIMING.kvCapacityTokens / indexBlockTokens);
  const progress = progressReporter();
  const { skipped, ...replayed } = await runReplay({
    workload,
    traceName,
    engines,
    policies,
    rateScale,
    loadSignal,
    hashing,
    seed,
    maxDurationMs,
    createIndex: () => new LocalPrefixIndex({ maxEntries }),
    onProgress: (policy, done, known) => progress.update(policy, done, Math.max(known, expected)),
  });
  progress.end();
  const report: ReplayReport = closedLoop === undefined ? replayed : { ...replayed, closedLoop };

  mkdirSync(out, { recursive: true });
  const table = formatTable(report);
  console.log(table);
  if (skipped > 0) console.log(`${skipped} requests left out: prompt + output larger than one engine's KV cache`);
  writeFileSync(join(out, 'report.json'), `${JSON.stringify({ ...report, skipped, seed }, null, 2)}\n`);
  writeFileSync(join(out, 'report.html'), renderHtml(report));
  writeFileSync(join(out, 'table.txt'), `${table}\n`);
  console.log(`report: ${join(out, 'report.html')} (and report.json, table.txt)`);
}

/** The presets named by --policy, then the routing block of --config's file. */
function replayPolicies(list: string | undefined, configPath: string | undefined): ReplayPolicy[] {
  const names = list?.split(',').map((p) => p.trim()).filter((p) => p !== '') ?? (configPath === undefined ? [...COMPARISON] : []);
  for (const p of names) if (!POLICY_NAMES.includes(p as PolicyName)) fail(`unknown policy "${p}"; known policies: ${POLICY_NAMES.join(', ')}`);
  const policies: ReplayPolicy[] = names as PolicyName[];
  if (configPath !== undefined) {
    // The gateway's own loader and schema: a bad file is a ConfigError naming the field, as at `serve`.
    const { routing } = loadConfig({ path: configPath });
    try {
      createPipeline(routing);
    } catch (err) {
      throw new ConfigError(configPath, [`routing: ${(err as Error).message}`]);
    }
    policies.push({ name: basename(configPath), routing });
  }
  if (policies.length === 0) fail('--policy names no policy');
  return policies;
}

interface Flags {
  readonly trace?: string | undefined;
  readonly generate?: string | undefined;
  readonly requests?: string | undefined;
  readonly users?: string | undefined;
  readonly 'think-ms'?: string | undefined;
  readonly prompts?: string | undefined;
  readonly 'duration-s'?: string | undefined;
  readonly 'rate-scale'?: string | undefined;
  readonly limit?: string | undefined;
}

interface ChosenWorkload {
  readonly workload: Workload;
  readonly traceName: string;
  readonly rateScale: number;
  readonly closedLoop?: { readonly users: number; readonly thinkMs: number };
  readonly maxDurationMs?: number;
  /** Requests the replay should see: a closed loop's users make theirs known one at a time. */
  readonly expected: number;
}

/** The trace, the generated open-loop trace (written into `out`), or the closed-loop users the flags ask for. */
function chooseWorkload(flags: Flags, seed: number, out: string): ChosenWorkload {
  const requests = numberFlag('replay', 'requests', flags.requests, 2000, (n) => Number.isInteger(n) && n >= 1);
  const kind = flags.generate;
  if (kind !== undefined && CLOSED_LOOP_NAMES.includes(kind as ClosedLoopName)) {
    for (const flag of ['rate-scale', 'limit'] as const) if (flags[flag] !== undefined) fail(`--${flag} is for traces and open-loop generators; closed-loop users send as they are answered, --requests bounds them`);
    if (flags.prompts !== undefined && kind !== 'zipf-prompts') fail('--prompts is for --generate zipf-prompts');
    const users = numberFlag('replay', 'users', flags.users, CLOSED_LOOP_DEFAULTS.users, (n) => Number.isInteger(n) && n >= 1);
    const thinkMs = numberFlag('replay', 'think-ms', flags['think-ms'], CLOSED_LOOP_DEFAULTS.thinkMs, (n) => n >= 0);
    const prompts = numberFlag('replay', 'prompts', flags.prompts, CLOSED_LOOP_DEFAULTS.prompts, (n) => Number.isInteger(n) && n >= 1);
    const durationS = numberFlag('replay', 'duration-s', flags['duration-s'], Infinity, (n) => n > 0);
    const workload = closedLoopWorkload(kind as ClosedLoopName, { users, requests, thinkMs, prompts, seed });
    const closedLoop = { users: Math.min(users, requests), thinkMs };
    return { workload, traceName: kind, rateScale: 1, closedLoop, maxDurationMs: durationS * 1000, expected: durationS === Infinity ? requests : 0 };
  }
  for (const flag of ['users', 'think-ms', 'prompts', 'duration-s'] as const) {
    if (flags[flag] !== undefined) fail(`--${flag} is for the closed-loop generators (${CLOSED_LOOP_NAMES.join(', ')})`);
  }
  const rateScale = numberFlag('replay', 'rate-scale', flags['rate-scale'], 1, (n) => n > 0);
  const limit = numberFlag('replay', 'limit', flags.limit, Infinity, (n) => Number.isInteger(n) && n >= 1);
  let traceName: string;
  let text: string;
  if (kind !== undefined) {
    if (!GENERATOR_NAMES.includes(kind as GeneratorName)) fail(`unknown generator "${kind}"; known: ${[...GENERATOR_NAMES, ...CLOSED_LOOP_NAMES].join(', ')}`);
    text = formatTrace(generateTrace(kind as GeneratorName, requests, seed));
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
  return { workload: openLoop(trace, rateScale), traceName: basename(traceName), rateScale, expected: trace.length };
}
