import { createRng } from '../core/hash.js';
import type { EngineSnapshot } from '../core/engine.js';
import { createPipeline } from '../router/routing/pipeline.js';
import type { RequestFeatures } from '../router/routing/types.js';

/**
 * The cost of one routing decision of the default policy (prefix-cache: the latency model over every candidate),
 * on 4, 16 and 64 engines with load and prefix matches on each, in the gateway's process model (one thread, the
 * pipeline and its plugins as the gateway builds them). Bounded: a fixed number of decisions per run.
 *
 *   npm run bench:routing [-- --decisions 200000 --runs 5]
 */

const args = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : dflt;
};
const decisions = flag('decisions', 200_000);
const runs = flag('runs', 5);

function fleet(n: number, rng: () => number): EngineSnapshot[] {
  return Array.from({ length: n }, (_, i) => ({
    spec: { id: `engine-${i}`, url: `http://127.0.0.1:${8000 + i}`, kind: 'vllm', models: ['m'], labels: {} },
    healthy: true,
    inFlight: Math.floor(rng() * 32),
    pendingPrefillTokens: Math.floor(rng() * 20_000),
    inFlightKvTokens: Math.floor(rng() * 200_000),
    inFlightOutputTokens: Math.floor(rng() * 8_000),
    recentPrefillRate: Math.floor(rng() * 20_000),
    load: { running: 8, waiting: 0, kvUsage: 0.3, scrapedAt: 0 },
  }));
}

function requests(engines: readonly EngineSnapshot[], rng: () => number): RequestFeatures[] {
  return Array.from({ length: 64 }, () => {
    const totalBlocks = 10 + Math.floor(rng() * 100);
    const matches = new Map<string, number>();
    for (const e of engines) if (rng() < 0.3) matches.set(e.spec.id, Math.floor(rng() * totalBlocks));
    return {
      model: 'm',
      endpoint: 'chat',
      pools: undefined,
      exclude: new Set<string>(),
      prefix: { totalBlocks, matches, recentSharers: rng() * 10 },
      promptTokens: totalBlocks * 64,
      outputTokens: 256,
    };
  });
}

console.log(`default policy (prefix-cache), ${decisions.toLocaleString('en-US')} decisions per run, ${runs} runs`);
for (const n of [4, 16, 64]) {
  const rng = createRng(n);
  const engines = fleet(n, rng);
  const pool = requests(engines, rng);
  const pipeline = createPipeline({}, { rng, cacheFill: () => 0.5 });
  const perDecisionUs: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = process.hrtime.bigint();
    // A new engines array per decision would be what the gateway hands over after a change; the same one is the
    // common case (no change between decisions), and keeps the scorer's per-decision memo honest.
    for (let i = 0; i < decisions; i++) pipeline.route(pool[i % pool.length], engines);
    perDecisionUs.push(Number(process.hrtime.bigint() - started) / 1000 / decisions);
  }
  perDecisionUs.sort((a, b) => a - b);
  const f = (us: number) => us.toFixed(2);
  console.log(`${String(n).padStart(3)} engines: ${f(perDecisionUs[0])} / ${f(perDecisionUs[Math.floor(runs / 2)])} / ${f(perDecisionUs[runs - 1])} us per decision (min / median / max)`);
}
