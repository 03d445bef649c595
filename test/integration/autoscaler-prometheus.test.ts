/**
 * The autoscaler end to end with a real Prometheus (issue 6 §4): simulated engines started by the local actuator,
 * scraped by Prometheus (file_sd, rewritten as replicas come and go), the autoscaler reading them through PromQL
 * scales the deployment up under load and back to one replica after the load stops. Skipped when the
 * `prometheus` binary is missing (.ci/run installs Debian's package).
 */

import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localActuator, type LocalActuator, type LocalReplica } from '../../autoscaler/actuators/local.js';
import { Autoscaler, type DecisionRecord } from '../../autoscaler/autoscaler.js';
import { resolveKpaOptions } from '../../autoscaler/kpa.js';
import { createAutoscalerServer, type AutoscalerServer } from '../../autoscaler/server.js';
import { prometheusSource } from '../../autoscaler/sources/prometheus.js';
import { prometheusAvailable, startPrometheus, type RunningPrometheus } from '../helpers/prometheus.js';

const cliPath = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const model = 'prom-model';
const query = `sum(vllm:num_requests_running{model_name="${model}"}) + sum(vllm:num_requests_waiting{model_name="${model}"})`;
/** Closed-loop clients: running + waiting over all replicas stays near this while the load lasts. */
const concurrency = 6;
/** Requests per replica to hold: 6 in flight ask for 3 replicas. */
const targetValue = 2;
const maxReplicas = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A base port with 2 x maxReplicas free ports from it (the local actuator's basePort + 2i, + 2i + 1). */
async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + 2 * Math.floor(Math.random() * 10_000);
    let free = true;
    for (let p = base; p < base + count && free; p++) free = await canBind(p);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

describe.runIf(prometheusAvailable)('autoscaler on PromQL from a real Prometheus, local replicas', () => {
  let prometheus: RunningPrometheus | undefined;
  let actuator: LocalActuator | undefined;
  let autoscaler: Autoscaler | undefined;
  let server: AutoscalerServer | undefined;
  let explainUrl = '';
  let live: readonly LocalReplica[] = [];
  /** Every replica count the actuator reported, in order. */
  const counts: number[] = [];

  beforeAll(async () => {
    prometheus = await startPrometheus({ scrapeIntervalMs: 500, targets: () => live.map((r) => `127.0.0.1:${r.enginePort}`) });
    const basePort = await freePortRange(2 * maxReplicas);
    actuator = localActuator({
      // A small batch (2 running per engine) so a single replica keeps requests waiting under the test's load.
      command: [process.execPath, cliPath, 'sim', '--port', '{enginePort}', '--model', model, '--time-scale', '1', '--max-num-seqs', '2', '--seed', '{index}'],
      basePort,
      maxReplicas,
      stopTimeoutMs: 3_000,
      output: 'ignore',
      onChange: (replicas) => {
        live = replicas;
        counts.push(replicas.length);
        prometheus?.sync();
      },
    });
    autoscaler = new Autoscaler(
      [
        {
          name: model,
          metric: 'promql',
          targetValue,
          minReplicas: 1,
          maxReplicas,
          algorithm: {
            kind: 'kpa',
            options: resolveKpaOptions({ stableWindowMs: 6_000, panicWindowMs: 1_000, scaleDownDelayMs: 2_000 }),
          },
          source: prometheusSource({ url: prometheus.url, query, timeoutMs: 1_000 }),
          actuator,
        },
      ],
      { intervalMs: 500, decisionHistory: 1_000 },
    );
    server = createAutoscalerServer(autoscaler, { logLevel: 'silent' });
    explainUrl = `${await server.listen()}/explain`;
  }, 30_000);

  afterAll(async () => {
    // close() stops the loop, then the actuator's replicas (SIGTERM, SIGKILL after 3 s) and the source.
    await server?.close();
    await autoscaler?.close();
    await actuator?.close();
    await prometheus?.stop();
  }, 30_000);

  const current = (): number => live.length;
  const history = (): readonly DecisionRecord[] => autoscaler!.explain().targets[0]!.decisions;

  /** Polls until cond() or the deadline; returns whether cond() held. */
  async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await cond()) return true;
      await sleep(100);
    }
    return cond();
  }

  it('starts the first replica, scales up under load, and back to one after the load stops', async () => {
    const started = Date.now();
    autoscaler!.start();

    // 0 replicas report nothing: the loop brings the target to minReplicas, then reads Prometheus once it
    // scrapes the replica (an idle engine: 0 requests, one replica is enough).
    expect(await waitFor(() => current() === 1, 5_000)).toBe(true);
    expect(history().at(-1)).toMatchObject({ reason: 'scale_up', current: 0, desired: 1, scaled: true });
    expect(await waitFor(() => history().some((r) => r.current === 1 && r.desired === 1 && r.reading !== undefined), 8_000)).toBe(true);

    // Load: closed-loop clients, round-robin over the live replicas, for a bounded time.
    let stopLoad = false;
    let ok = 0;
    let next = 0;
    const loadDeadline = Date.now() + 15_000;
    const worker = async (): Promise<void> => {
      while (!stopLoad && Date.now() < loadDeadline) {
        const replicas = live;
        if (replicas.length === 0) {
          await sleep(50);
          continue;
        }
        const r = replicas[next++ % replicas.length]!;
        try {
          const res = await request(`${r.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Count slowly to a hundred, please.' }], max_tokens: 48 }),
            signal: AbortSignal.timeout(10_000),
          });
          await res.body.dump();
          if (res.statusCode === 200) ok++;
        } catch {
          // A replica still starting (connection refused) or just stopped: try the next one shortly.
          await sleep(50);
        }
      }
    };
    const loadStarted = Date.now();
    const workers = Array.from({ length: concurrency }, () => worker());
    const scaledUp = await waitFor(() => current() >= 2, 12_000);
    const scaleUpMs = Date.now() - loadStarted;
    // Keep the load on a little longer, so the new replicas take their share and the stable window sees it.
    if (scaledUp) await waitFor(() => false, 2_000);
    const peak = Math.max(...counts);
    stopLoad = true;
    await Promise.all(workers);
    const loadStopped = Date.now();
    expect(scaledUp).toBe(true);
    expect(ok).toBeGreaterThan(10);
    expect(peak).toBeGreaterThanOrEqual(2);
    expect(peak).toBeLessThanOrEqual(maxReplicas);

    // The first scale-up on the metric (history() is newest first).
    const up = [...history()].reverse().find((r) => r.reason === 'scale_up' && r.current === 1 && r.scaled);
    expect(up).toBeDefined();
    expect(up!.decision!.load).toBeGreaterThan(targetValue);
    expect(up!.reading?.detail).toMatch(/^1 value, sum \d/);

    // Load gone: once the windows and the 2 s scale-down delay have passed, back to minReplicas.
    const scaledDown = await waitFor(() => current() === 1 && history().some((r) => r.reason === 'scale_down' && r.desired === 1 && r.scaled), 20_000);
    const scaleDownMs = Date.now() - loadStopped;
    expect(scaledDown).toBe(true);
    await actuator!.settled();
    // Settled at minReplicas once the last recommendations above it leave the 2 s scale-down delay.
    expect(await waitFor(() => history()[0]!.reason === 'at_min' && history()[0]!.current === 1, 4_000)).toBe(true);

    // /explain over HTTP tells both changes and why.
    const text = await (await request(`${explainUrl}?format=text`)).body.text();
    expect(text).toMatch(new RegExp(`^target ${model}: promql [\\d.]+ per replica against target ${targetValue} over the 6 s stable window -> 1 replica -> 1 \\(at minReplicas; the load asks for 0\\)$`, 'm'));
    expect(text).toMatch(new RegExp(`1 -> ${up!.desired} {2}scale_up {2}promql [\\d.]+ per replica`));
    expect(text).toMatch(/ -> 1 {2}scale_down {2}promql [\d.]+ per replica/);
    expect(text).toMatch(/0 -> 1 {2}scale_up/);
    const json = (await (await request(explainUrl)).body.json()) as { targets: { source: string; lastChange: DecisionRecord }[] };
    expect(json.targets[0]!.source).toContain(query);
    expect(json.targets[0]!.lastChange).toMatchObject({ reason: 'scale_down', desired: 1, scaled: true });
    const reasons = new Set(history().map((r) => r.reason));
    expect(reasons).toContain('scale_up');
    expect(reasons).toContain('scale_down');
    // The stopped replicas left Prometheus with the actuator's change (file_sd rewritten): one engine's series.
    const engines = async (): Promise<number> => ((await prometheus!.query(`vllm:num_requests_running{model_name="${model}"}`)) as unknown[]).length;
    expect(await waitFor(async () => (await engines()) === 1, 3_000)).toBe(true);

    console.log(
      `autoscaler-prometheus: peak ${peak} replicas (counts ${counts.join(',')}), scale-up ${scaleUpMs} ms after load, ` +
        `back to 1 ${scaleDownMs} ms after it stopped, ${ok} requests, ${Date.now() - started} ms in all`,
    );
  }, 60_000);
});
