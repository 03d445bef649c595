import { afterEach, describe, expect, it, vi } from 'vitest';
import { SimulatedFleet } from '../../../bench/replay/fleet.js';
import { TimingModel } from '../../../engine-sim/timing-model.js';
import { queuedLoad, queuedPrefill } from '../../../router/routing/engine-model.js';
import { DEFAULT_ENGINE_PERF } from '../../../core/engine.js';
import { startFakeFleet } from './fake-engine.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('registry snapshots under steady traffic', () => {
  it('age the head of a quiet engine prefill queue as the replayer does', async () => {
    const { registry } = await startFakeFleet(2, 'llama', cleanups);
    const sim = new SimulatedFleet([new TimingModel(), new TimingModel()], 'llama', 'pending', 1000);
    vi.useFakeTimers({ toFake: ['performance'] });
    const tick = (ms: number) => {
      vi.advanceTimersByTime(ms);
      sim.advance(performance.now());
    };
    tick(0);
    // engine-0 starts a 100,000-token prompt (3.3 s at 30K tokens/s); nothing else happens on it.
    const long = { prefillTokens: 100_000, kvTokens: 100_100, outputTokens: 200 };
    registry.acquire('engine-0', long);
    sim.acquire('engine-0', long);
    // Meanwhile engine-1 serves short requests, one every 50 ms, for 3 s.
    const short = { prefillTokens: 500, kvTokens: 600, outputTokens: 200 };
    for (let i = 0; i < 60; i++) {
      tick(50);
      registry.acquire('engine-1', short);
      sim.acquire('engine-1', short);
      registry.snapshot();
      sim.snapshot();
    }
    const live = registry.snapshot()[0]!;
    const replay = sim.snapshot()[0]!;
    expect(replay.prefillHeadAgeMs).toBe(3000);
    // What routing then believes is still queued on engine-0: ~10,000 tokens in the replayer, 100,000 live.
    console.log('queued prefill, replay', queuedPrefill(DEFAULT_ENGINE_PERF, queuedLoad(replay)), 'live', queuedPrefill(DEFAULT_ENGINE_PERF, queuedLoad(live)));
    expect(live.prefillHeadAgeMs).toBe(replay.prefillHeadAgeMs);
    expect(live.recentPrefillRate).toBeCloseTo(replay.recentPrefillRate!, 6);
  });
});
