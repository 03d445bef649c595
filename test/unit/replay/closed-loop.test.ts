import { describe, expect, it } from 'vitest';
import { closedLoopWorkload, conversationUsers, sharedPromptUsers, zipfPromptUsers } from '../../../bench/replay/closed-loop.js';
import { replayRequests } from '../../../bench/replay/replay.js';
import { simulate } from '../../../bench/replay/simulate.js';
import type { Workload, WorkloadRequest } from '../../../bench/replay/workload.js';
import { createRng } from '../../../core/hash.js';
import { DEFAULT_TIMING } from '../../../engine-sim/timing-model.js';
import { DEFAULT_BLOCK_SIZE } from '../../../kvcache/block-hash.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';
import { createPipeline } from '../../../router/routing/pipeline.js';

interface Served {
  readonly user: number;
  readonly request: WorkloadRequest;
  /** When the previous request of the user ended (undefined for its first). */
  readonly after: number | undefined;
  readonly finishMs: number;
}

/**
 * Serves every request at once (no queueing), `serviceMs` long, and asks the workload for the user's next one when
 * it ends: the closed loop without an engine. Bounded: a workload that never stops fails the test.
 */
function drive(workload: Workload, serviceMs: (r: WorkloadRequest) => number): Served[] {
  const pending = workload.initial.map((request, user) => ({ user, request, after: undefined as number | undefined }));
  const served: Served[] = [];
  while (pending.length > 0) {
    if (served.length > 100_000) throw new Error('the workload did not stop');
    pending.sort((a, b) => a.request.timestampMs + serviceMs(a.request) - (b.request.timestampMs + serviceMs(b.request)));
    const { user, request, after } = pending.shift()!;
    const finishMs = request.timestampMs + serviceMs(request);
    served.push({ user, request, after, finishMs });
    const next = workload.next?.(request, finishMs);
    if (next !== undefined) pending.push({ user, request: next, after: finishMs });
  }
  return served;
}

const shared = (extra: Partial<Parameters<typeof sharedPromptUsers>[0]> = {}) =>
  sharedPromptUsers({ users: 8, requests: 200, thinkMs: 500, seed: 1, systemPromptTokens: 4000, userTokens: [50, 600], outputTokens: [64, 300], ...extra });

const byUser = (served: readonly Served[]) => {
  const users = new Map<number, Served[]>();
  for (const s of served) users.set(s.user, [...(users.get(s.user) ?? []), s]);
  return users;
};

describe('closed-loop workloads', () => {
  it('sends exactly the requests asked for, shared among the users, each after its previous one ended plus a think time', () => {
    const served = drive(shared({ requests: 203, thinkMs: 500 }), () => 1000);
    expect(served).toHaveLength(203);
    const users = byUser(served);
    expect(users.size).toBe(8);
    for (const requests of users.values()) expect(requests.length === 25 || requests.length === 26).toBe(true);
    const gaps = served.filter((s) => s.after !== undefined).map((s) => s.request.timestampMs - s.after!);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0);
    // Exponential think times of mean 500 ms: the mean of 195 draws is within 20% (about 3 standard errors).
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    expect(mean).toBeGreaterThan(400);
    expect(mean).toBeLessThan(600);
    expect(new Set(gaps.map((g) => Math.round(g))).size).toBeGreaterThan(100);
  });

  it('with no think time, starts every user at once and sends the next request the moment the last one ends', () => {
    const served = drive(shared({ thinkMs: 0 }), () => 700);
    expect(served.slice(0, 8).map((s) => s.request.timestampMs)).toEqual(new Array(8).fill(0));
    for (const s of served) if (s.after !== undefined) expect(s.request.timestampMs).toBe(s.after);
    expect(served.at(-1)!.finishMs).toBe(25 * 700);
  });

  it('gives each user the same requests whatever the engines do: only their times differ', () => {
    const contents = (served: readonly Served[]) =>
      [...byUser(served).entries()].sort(([a], [b]) => a - b).map(([, requests]) => requests.map(({ request: { timestampMs: _, ...rest } }) => rest));
    const conversations = () =>
      conversationUsers({ users: 6, requests: 120, thinkMs: 300, seed: 4, systemPromptTokens: 1024, turns: [2, 5], firstMessageTokens: [100, 900], userTokens: [20, 400], outputTokens: [10, 300] });
    const fast = drive(conversations(), () => 100);
    const slow = drive(conversations(), (r) => 50 + r.inputLength);
    expect(contents(slow)).toEqual(contents(fast));
    expect(slow.map((s) => s.request.timestampMs)).not.toEqual(fast.map((s) => s.request.timestampMs));
    expect(contents(drive(conversationsWithSeed(5), () => 100))).not.toEqual(contents(fast));

    function conversationsWithSeed(seed: number) {
      return conversationUsers({ users: 6, requests: 120, thinkMs: 300, seed, systemPromptTokens: 1024, turns: [2, 5], firstMessageTokens: [100, 900], userTokens: [20, 400], outputTokens: [10, 300] });
    }
  });

  it('shared-prompt: every request is the system prompt\'s blocks, then blocks no other request has', () => {
    const served = drive(shared(), () => 100);
    const own = new Set<number>();
    for (const { request } of served) {
      expect(request.hashIds.slice(0, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect(request.inputLength - 8 * 512).toBeGreaterThanOrEqual(50);
      expect(request.inputLength - 8 * 512).toBeLessThanOrEqual(600);
      expect(request.hashIds.length).toBe(Math.ceil(request.inputLength / 512));
      expect(request.outputLength).toBeGreaterThanOrEqual(64);
      expect(request.outputLength).toBeLessThanOrEqual(300);
      expect(request.session).toBeUndefined();
      for (const id of request.hashIds.slice(8)) {
        expect(own.has(id)).toBe(false);
        own.add(id);
      }
    }
  });

  it('zipf-prompts: K prompts, each picked more often the more popular it is', () => {
    const workload = zipfPromptUsers({
      users: 16, requests: 6000, thinkMs: 0, seed: 3, prompts: 5, exponent: 1, systemPromptTokens: [1000, 3000], userTokens: [10, 100], outputTokens: [1, 2],
    });
    const served = drive(workload, () => 10);
    const counts = new Map<number, number>();
    for (const { request } of served) counts.set(request.hashIds[0], (counts.get(request.hashIds[0]) ?? 0) + 1);
    expect(counts.size).toBe(5);
    const ranked = [...counts.entries()].sort(([a], [b]) => a - b).map(([, n]) => n);
    // Weights 1, 1/2, 1/3, 1/4, 1/5 (sum 2.28): 2,628, 1,314, 876, 657, 526 of 6,000 expected.
    for (let k = 1; k < ranked.length; k++) expect(ranked[k]).toBeLessThan(ranked[k - 1]);
    expect(ranked[0] / 6000).toBeGreaterThan(0.41);
    expect(ranked[0] / 6000).toBeLessThan(0.47);
    expect(ranked[0] / ranked[1]).toBeGreaterThan(1.7);
    expect(ranked[0] / ranked[1]).toBeLessThan(2.3);
  });

  it('conversations: each turn extends the last, a conversation is a session, then the user starts a new one', () => {
    const served = drive(
      conversationUsers({ users: 5, requests: 150, thinkMs: 200, seed: 2, systemPromptTokens: 1024, turns: [2, 4], firstMessageTokens: [100, 900], userTokens: [20, 400], outputTokens: [10, 300] }),
      () => 50,
    );
    const sessions = new Map<string, Served[]>();
    for (const s of served) sessions.set(s.request.session!, [...(sessions.get(s.request.session!) ?? []), s]);
    // A session names its user: one prefix per user, the same on all its sessions.
    const names = new Map<number, string>();
    for (const [session, turns] of sessions) {
      const user = turns[0].user;
      expect(turns.every((t) => t.user === user)).toBe(true);
      const name = session.match(/^(u\d+)-c\d+$/)![1];
      expect(names.get(user) ?? name).toBe(name);
      names.set(user, name);
      expect(turns[0].request.hashIds.slice(0, 2)).toEqual([0, 1]);
      expect(turns[0].request.inputLength).toBeLessThanOrEqual(1024 + 900);
      for (let k = 1; k < turns.length; k++) {
        const [prev, next] = [turns[k - 1].request, turns[k].request];
        expect(next.hashIds.slice(0, prev.hashIds.length)).toEqual(prev.hashIds);
        const added = next.inputLength - prev.inputLength - prev.outputLength;
        expect(added).toBeGreaterThanOrEqual(20);
        expect(added).toBeLessThanOrEqual(400);
        expect(next.hashIds.length).toBe(Math.ceil(next.inputLength / 512));
      }
    }
    expect(new Set(names.values()).size).toBe(5);
    // A user's conversations come one after another, numbered in order; the last may be cut by the request bound.
    for (const requests of byUser(served).values()) {
      const order = requests.map((s) => Number(s.request.session!.split('-c')[1]));
      expect(order).toEqual([...order].sort((a, b) => a - b));
      const lengths = [...new Set(order)].map((c) => order.filter((o) => o === c).length);
      for (const n of lengths.slice(0, -1)) expect(n).toBeGreaterThanOrEqual(2);
      for (const n of lengths) expect(n).toBeLessThanOrEqual(4);
      // A new conversation shares the system prompt with the last one, nothing more.
      const firsts = requests.filter((s, i) => i === 0 || s.request.session !== requests[i - 1].request.session);
      for (let i = 1; i < firsts.length; i++) {
        const a = firsts[i - 1].request.hashIds;
        const b = firsts[i].request.hashIds;
        expect(b.slice(0, 2)).toEqual(a.slice(0, 2));
        expect(b[2]).not.toBe(a[2]);
      }
    }
  });

  it('through the simulated fleet, N users never have more than N requests in flight, nor a session two at once', async () => {
    const users = 6;
    const workload = closedLoopWorkload('conversations', { users, requests: 90, thinkMs: 100, prompts: 8, seed: 1 });
    const result = await simulate({
      workload,
      prepare: replayRequests(DEFAULT_TIMING),
      engines: 2,
      pipeline: (sources) => createPipeline({ policy: 'prefix-cache' }, { rng: createRng(1), ...sources }),
      index: new LocalPrefixIndex({ maxEntries: 100_000 }),
      indexBlockTokens: DEFAULT_BLOCK_SIZE,
    });
    expect(result.outcomes).toHaveLength(90);
    const events = result.outcomes.flatMap((o) => [[o.arrivalMs, 1] as const, [o.finishMs, -1] as const]);
    // At equal times a finish goes first: the user's next request may come the same instant.
    events.sort(([a, da], [b, db]) => a - b || da - db);
    let outstanding = 0;
    let peak = 0;
    for (const [, delta] of events) peak = Math.max(peak, (outstanding += delta));
    expect(peak).toBeLessThanOrEqual(users);
    expect(peak).toBeGreaterThanOrEqual(users - 1);
    const lastFinish = new Map<string, number>();
    result.requests.forEach((r, i) => {
      const o = result.outcomes[i];
      expect(o.arrivalMs).toBeGreaterThanOrEqual(lastFinish.get(r.session!) ?? 0);
      lastFinish.set(r.session!, o.finishMs);
    });
  });

  it('rejects options that cannot make a workload', () => {
    expect(() => shared({ users: 0 })).toThrow(RangeError);
    expect(() => shared({ thinkMs: -1 })).toThrow(/thinkMs/);
    expect(() => shared({ userTokens: [600, 50] })).toThrow(/userTokens/);
    expect(() => zipfPromptUsers({ users: 2, requests: 4, thinkMs: 0, seed: 1, prompts: 0, exponent: 1, systemPromptTokens: [1, 2], userTokens: [1, 2], outputTokens: [1, 2] })).toThrow(/prompts/);
  });
});
