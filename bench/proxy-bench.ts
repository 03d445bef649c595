import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { parseCommandArgs } from '../cli/args.js';
import { cpuSeconds, pinSelf, startService, type Service } from './child.js';

/**
 * What the gateway costs on top of a bare proxy. One simulated engine with zero latency, reached three ways:
 * directly, through the floor proxy (bench/floor-proxy.ts) and through the gateway. autocannon drives each in
 * turn; the proxy's CPU time over a run divided by the requests completed gives its CPU per request, the number
 * that decides how many cores a gateway fleet needs.
 */

const usage = `npm run bench:proxy -- [--runs 3] [--duration 5] [--connections 32] [--max-tokens 16] [--warmup 2] [--rate R] [--token-ms MS] [--policy P] [--no-prefix] [--unpinned] [--profile]

  --runs N         measured runs per target and mode (env BENCH_RUNS)
  --duration S     seconds per run (env BENCH_DURATION)
  --connections C  concurrent client connections (env BENCH_CONNECTIONS)
  --max-tokens T   tokens per answer (SSE events per stream)
  --warmup S       seconds of unmeasured load per target and mode before the runs
  --rate R         fixed offered load in req/s for every target (default: as fast as each goes)
  --token-ms MS    the sim waits MS before each token, so a stream arrives as many chunks (default 0:
                   the whole answer in one read, which measures per-request cost but not per-chunk cost)
  --unpinned       do not pin processes to CPUs (default: proxies on the last CPU, the rest on the others)
  --profile        run the gateway and the floor with --cpu-prof (profiles in .bench/); inflates their CPU`;

const flags = parseCommandArgs(
  'proxy-bench',
  usage,
  {
    runs: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    'max-tokens': { type: 'string' },
    warmup: { type: 'string' },
    rate: { type: 'string' },
    'token-ms': { type: 'string' },
    policy: { type: 'string' },
    'no-prefix': { type: 'boolean', default: false },
    unpinned: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
  process.argv.slice(2),
);

function intSetting(name: string, flag: string | undefined, env: string | undefined, dflt: number, min: number, max: number): number {
  const raw = flag ?? (env === undefined ? undefined : process.env[env]);
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`proxy-bench: --${name} ${JSON.stringify(raw)} must be an integer from ${min} to ${max}\n\n${usage}`);
    process.exit(2);
  }
  return n;
}

const settings = {
  runs: intSetting('runs', flags.runs, 'BENCH_RUNS', 3, 1, 50),
  durationS: intSetting('duration', flags.duration, 'BENCH_DURATION', 5, 1, 120),
  connections: intSetting('connections', flags.connections, 'BENCH_CONNECTIONS', 32, 1, 1024),
  maxTokens: intSetting('max-tokens', flags['max-tokens'], undefined, 16, 1, 4096),
  warmupS: intSetting('warmup', flags.warmup, undefined, 2, 0, 60),
  // 0: closed loop. A fixed rate compares CPU per request at equal load: a busier process batches more
  // requests per event-loop turn and so pays less per request, which flatters whichever target runs faster.
  rate: intSetting('rate', flags.rate, undefined, 0, 0, 1_000_000),
  tokenMs: intSetting('token-ms', flags['token-ms'], undefined, 0, 0, 1000),
  pinned: !flags.unpinned && cpus().length >= 2,
  profile: flags.profile,
};

const model = 'bench-model';
const modes = ['non-stream', 'stream'] as const;
type Mode = (typeof modes)[number];

interface Target {
  readonly name: 'sim' | 'floor' | 'gateway';
  readonly url: string;
  readonly headers: Record<string, string>;
  /** The process between client and engine; none when the sim is hit directly. */
  readonly proxy: Service | undefined;
}

interface Run {
  readonly requests: number;
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly proxyCpuUsPerReq: number | null;
  readonly simCpuUsPerReq: number;
}

const requestBody = (mode: Mode) =>
  JSON.stringify({
    model,
    messages: [{ role: 'user', content: 'Tell the bench something short.' }],
    max_tokens: settings.maxTokens,
    stream: mode === 'stream',
  });

// A 200 is not enough: a stream that broke in the middle still has a 200 and lacks the final [DONE].
const answered = (mode: Mode, body: string) => (mode === 'stream' ? body.trimEnd().endsWith('data: [DONE]') : body.includes('"choices"'));

/** One request by fetch before any load, so a misconfigured target fails with its own error message. */
async function probe(target: Target, mode: Mode): Promise<void> {
  const res = await fetch(`${target.url}/v1/chat/completions`, {
    method: 'POST',
    headers: target.headers,
    body: requestBody(mode),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (!res.ok || !answered(mode, text)) throw new Error(`${target.name} ${mode}: probe got ${res.status}: ${text.slice(0, 500)}`);
}

async function load(target: Target, mode: Mode, durationS: number, sim: Service): Promise<Run> {
  const proxyBefore = target.proxy === undefined ? 0 : cpuSeconds(target.proxy.pid);
  const simBefore = cpuSeconds(sim.pid);
  const result = await autocannon({
    url: `${target.url}/v1/chat/completions`,
    method: 'POST',
    headers: target.headers,
    body: requestBody(mode),
    connections: settings.connections,
    duration: durationS,
    timeout: 10,
    ...(settings.rate > 0 ? { overallRate: settings.rate } : {}),
    verifyBody: (body) => answered(mode, String(body)),
  });
  const proxyCpu = target.proxy === undefined ? 0 : cpuSeconds(target.proxy.pid) - proxyBefore;
  const simCpu = cpuSeconds(sim.pid) - simBefore;
  const requests = result.requests.total;
  const bad = result.non2xx + result.errors + result.timeouts + result.mismatches;
  if (bad > 0 || requests === 0) {
    throw new Error(
      `${target.name} ${mode}: ${requests} requests, non-2xx ${result.non2xx} ${JSON.stringify(result.statusCodeStats ?? {})}, ` +
        `errors ${result.errors}, timeouts ${result.timeouts}, broken bodies ${result.mismatches}`,
    );
  }
  const usPerReq = (seconds: number) => (seconds * 1e6) / requests;
  return {
    requests,
    reqPerSec: requests / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    proxyCpuUsPerReq: target.proxy === undefined ? null : usPerReq(proxyCpu),
    simCpuUsPerReq: usPerReq(simCpu),
  };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const spread = (xs: readonly number[]) => [Math.min(...xs), median(xs), Math.max(...xs)].map((x) => x.toFixed(0)).join(' / ');

function printTable(rows: readonly (readonly string[])[]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
}

async function main(): Promise<void> {
  const dist = fileURLToPath(new URL('..', import.meta.url));
  const cli = join(dist, 'cli', 'main.js');
  const outDir = join(process.cwd(), '.bench');
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const nodeArgs = (name: string) =>
    settings.profile ? ['--cpu-prof', `--cpu-prof-dir=${outDir}`, `--cpu-prof-name=proxy-${stamp}-${name}.cpuprofile`] : [];
  const key = randomBytes(24).toString('hex');
  // Left to the scheduler, the proxy shares cores with the load generator and the sim in a way that changes
  // from one process start to the next, and its CPU per request changes with it (tens of % on 2 cores). The
  // proxies get the last CPU to themselves (only one is loaded at a time); load generator and sim share the rest.
  const last = cpus().length - 1;
  const proxyCpus = settings.pinned ? String(last) : undefined;
  const otherCpus = settings.pinned ? (last === 1 ? '0' : `0-${last - 1}`) : undefined;
  if (otherCpus !== undefined) pinSelf(otherCpus);
  const services: Service[] = [];
  const start = async (...args: Parameters<typeof startService>) => {
    const s = await startService(...args);
    services.push(s);
    return s;
  };

  try {
    const pace = settings.tokenMs > 0 ? ['--slow-ms-per-token', String(settings.tokenMs)] : [];
    const simArgs = ['sim', '--port', '0', '--model', model, '--zero-latency', ...pace];
    const sim = await start('sim', cli, simArgs, /^switchyard sim listening on (\S+)/, { cpus: otherCpus });
    const floor = await start('floor', join(dist, 'bench', 'floor-proxy.js'), ['--upstream', sim.url, '--port', '0'], /^floor proxy listening on (\S+)/, {
      nodeArgs: nodeArgs('floor'),
      cpus: proxyCpus,
    });
    // JSON is YAML; kept in .bench/ next to the results so a run can be reproduced by hand.
    const configPath = join(outDir, `proxy-${stamp}-gateway.yaml`);
    const config = {
      server: { host: '127.0.0.1', port: 0 },
      auth: { keys: [{ principal: 'bench', env: 'BENCH_KEY' }] },
      engines: [{ id: 'sim-0', url: sim.url, kind: 'vllm', models: [model], labels: { pool: 'default' } }],
      // The gateway's defaults (prefix-cache routing, every prompt hashed and looked up) unless asked otherwise:
      // --no-prefix --policy least-request measures the bare proxying path.
      ...(flags.policy === undefined ? {} : { routing: { policy: flags.policy } }),
      kvcache: { enabled: !flags['no-prefix'] },
      // Request logs would cost CPU the floor does not spend; warnings still show.
      log: { level: 'warn' },
    };
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    const gateway = await start('gateway', cli, ['serve', '--config', configPath], /^switchyard gateway listening on (\S+)/, {
      nodeArgs: nodeArgs('gateway'),
      cpus: proxyCpus,
      env: { BENCH_KEY: key },
    });

    const json = { 'content-type': 'application/json' };
    const targets: Target[] = [
      { name: 'sim', url: sim.url, headers: json, proxy: undefined },
      { name: 'floor', url: floor.url, headers: json, proxy: floor },
      { name: 'gateway', url: gateway.url, headers: { ...json, authorization: `Bearer ${key}` }, proxy: gateway },
    ];

    const runs = new Map<string, Run[]>();
    for (const mode of modes) {
      for (const t of targets) {
        await probe(t, mode);
        if (settings.warmupS > 0) await load(t, mode, settings.warmupS, sim);
      }
      // Targets take turns run by run, so a slow drift of the machine touches all of them alike.
      for (let i = 0; i < settings.runs; i++) {
        for (const t of targets) {
          const run = await load(t, mode, settings.durationS, sim);
          runs.set(`${mode}/${t.name}`, [...(runs.get(`${mode}/${t.name}`) ?? []), run]);
          process.stderr.write(`${mode} ${t.name} run ${i + 1}/${settings.runs}: ${run.reqPerSec.toFixed(0)} req/s\n`);
        }
      }
    }

    const rows = [['mode', 'target', 'runs', 'req/s min / med / max', 'p50 ms', 'p99 ms', 'proxy CPU µs/req min / med / max', 'sim CPU µs/req', 'non-2xx']];
    const summary: { mode: Mode; target: Target['name']; runs: Run[] }[] = [];
    for (const mode of modes) {
      for (const t of targets) {
        const rs = runs.get(`${mode}/${t.name}`)!;
        const cpu = rs.flatMap((r) => (r.proxyCpuUsPerReq === null ? [] : [r.proxyCpuUsPerReq]));
        rows.push([
          mode,
          t.name,
          String(rs.length),
          spread(rs.map((r) => r.reqPerSec)),
          median(rs.map((r) => r.p50Ms)).toFixed(1),
          median(rs.map((r) => r.p99Ms)).toFixed(1),
          cpu.length === 0 ? '-' : spread(cpu),
          median(rs.map((r) => r.simCpuUsPerReq)).toFixed(0),
          '0',
        ]);
        summary.push({ mode, target: t.name, runs: rs });
      }
    }
    console.log(`\n${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}`);
    const offered = settings.rate > 0 ? `${settings.rate} req/s offered` : 'closed loop';
    const pinning = settings.pinned ? `proxy on CPU ${proxyCpus}, load generator and sim on ${otherCpus}` : 'unpinned';
    console.log(
      `${settings.runs} runs x ${settings.durationS} s, ${settings.connections} connections, ${offered}, ` +
        `max_tokens ${settings.maxTokens}, ${settings.tokenMs} ms/token, ${pinning}\n`,
    );
    printTable(rows);

    const ratios: Record<string, number> = {};
    for (const mode of modes) {
      const cpuMedian = (name: string) => median(runs.get(`${mode}/${name}`)!.map((r) => r.proxyCpuUsPerReq!));
      ratios[mode] = cpuMedian('gateway') / cpuMedian('floor');
    }
    const goal = 1.3;
    console.log(
      `\ngateway / floor CPU per request (medians): ` +
        modes.map((m) => `${m} ${ratios[m]!.toFixed(2)}x ${ratios[m]! <= goal ? 'within' : 'OVER'} the ${goal}x goal`).join('; '),
    );

    const outFile = join(outDir, `proxy-${stamp}.json`);
    const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version };
    writeFileSync(outFile, JSON.stringify({ date: new Date().toISOString(), machine, settings, gatewayConfig: config, results: summary, ratios, goal }, null, 2));
    console.log(`results: ${outFile}`);
  } finally {
    // Proxies first, so none sees its engine vanish and complains.
    for (const s of [...services].reverse()) await s.stop();
  }
}

process.once('SIGINT', () => process.exit(130));
main().catch((err: unknown) => {
  console.error(`proxy-bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
