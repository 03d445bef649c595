import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { createRng } from '../core/hash.js';
import { startService } from './child.js';

/**
 * Routing policies compared live, through `switchyard dev` (what `npm start` runs: the gateway and 4 simulated
 * engines on loopback), as a new user would see them: N concurrent users streaming chats that all start with one
 * long system prompt, through the official openai client. Per policy: TTFT and end-to-end latency as the client
 * measured them, the share of prompt tokens the engines reported cached, and how requests spread over engines.
 * Then the turns of a few conversations, to show they stay on one engine. Policies alternate round by round, so
 * the machine's noise falls on each alike; the ratio to the baseline is taken within each round.
 *
 *   npm run bench:live -- [--policies prefix-cache,least-request] [--rounds 3] [--users 32] [--requests 200]
 */

const { values } = parseArgs({
  options: {
    policies: { type: 'string', default: 'prefix-cache,least-request' },
    rounds: { type: 'string', default: '3' },
    users: { type: 'string', default: '32' },
    requests: { type: 'string', default: '200' },
    'max-tokens': { type: 'string', default: '64' },
    'system-words': { type: 'string', default: '2000' },
    conversations: { type: 'string', default: '8' },
    turns: { type: 'string', default: '5' },
  },
});
const policies = values.policies.split(',');
const rounds = Number(values.rounds);
const users = Number(values.users);
const requests = Number(values.requests);
const maxTokens = Number(values['max-tokens']);
const KEY = 'sk-sy-live-routing-bench-0000000000';
const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const WORDS = 'the of and to in is that for it as with was on be by at this have from or an are not but which all were can more one has its will'.split(' ');

function words(rng: () => number, count: number): string {
  return Array.from({ length: count }, () => WORDS[Math.floor(rng() * WORDS.length)]).join(' ');
}

const systemPrompt = `You are the assistant of one app. ${words(createRng(42), Number(values['system-words']))}`;

interface Sample {
  readonly ttftMs: number;
  readonly e2eMs: number;
  readonly promptTokens: number;
  readonly cachedTokens: number;
  readonly engine: string;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function chat(client: OpenAI, messages: OpenAI.ChatCompletionMessageParam[], session?: string): Promise<Sample & { text: string }> {
  const started = performance.now();
  const { data: stream, response } = await client.chat.completions
    .create(
      { model: 'llama-3.1-8b-instruct', messages, stream: true, max_tokens: maxTokens, stream_options: { include_usage: true } },
      session === undefined ? {} : { headers: { 'x-session-id': session } },
    )
    .withResponse();
  let ttftMs = NaN;
  let text = '';
  let promptTokens = 0;
  let cachedTokens = 0;
  for await (const chunk of stream) {
    if (Number.isNaN(ttftMs)) ttftMs = performance.now() - started;
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) {
      promptTokens = chunk.usage.prompt_tokens;
      cachedTokens = chunk.usage.prompt_tokens_details?.cached_tokens ?? 0;
    }
  }
  return { ttftMs, e2eMs: performance.now() - started, promptTokens, cachedTokens, engine: response.headers.get('x-switchyard-pod') ?? '?', text };
}

/** `users` loops, each sending its next request when the last ended, until `requests` have been sent. */
async function sharedPrompt(client: OpenAI, round: number): Promise<Sample[]> {
  const rng = createRng(1000 + round);
  const samples: Sample[] = [];
  let sent = 0;
  const user = async (u: number) => {
    while (sent < requests) {
      sent++;
      const question = `User ${u} asks: ${words(rng, 20 + Math.floor(rng() * 40))}?`;
      samples.push(await chat(client, [{ role: 'system', content: systemPrompt }, { role: 'user', content: question }]));
    }
  };
  await Promise.all(Array.from({ length: users }, (_, u) => user(u)));
  return samples;
}

/** Conversations of several turns, in parallel; each turn carries the whole history. Returns the engine per turn. */
async function conversations(client: OpenAI): Promise<string[][]> {
  const rng = createRng(7);
  const run = async (c: number): Promise<string[]> => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: `Conversation ${c}. ${words(rng, 300)}` }];
    const engines: string[] = [];
    for (let t = 0; t < Number(values.turns); t++) {
      messages.push({ role: 'user', content: words(rng, 30 + Math.floor(rng() * 60)) });
      const answer = await chat(client, messages, `conversation-${c}`);
      messages.push({ role: 'assistant', content: answer.text });
      engines.push(answer.engine);
    }
    return engines;
  };
  return Promise.all(Array.from({ length: Number(values.conversations) }, (_, c) => run(c)));
}

function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

interface RoundResult {
  readonly ttft50: number;
  readonly ttft99: number;
  readonly e2e50: number;
  readonly e2e99: number;
  readonly cached: number;
  readonly spread: string;
  readonly wallMs: number;
  readonly sticky: number;
}

async function runPolicy(policy: string, round: number): Promise<RoundResult> {
  const port = await freePort();
  const gateway = await startService(policy, cli, ['dev', '--port', String(port)], /gateway on (http:\/\/\S+)/, {
    env: { SWITCHYARD_ROUTING_POLICY: policy, SWITCHYARD_API_KEY: KEY, SWITCHYARD_LOG_LEVEL: 'warn' },
    timeoutMs: 60_000,
  });
  try {
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 120_000 });
    const started = performance.now();
    const samples = await sharedPrompt(client, round);
    const wallMs = performance.now() - started;
    const perEngine = new Map<string, number>();
    for (const s of samples) perEngine.set(s.engine, (perEngine.get(s.engine) ?? 0) + 1);
    const turns = await conversations(client);
    const sticky = turns.reduce((n, engines) => n + engines.filter((e) => e === engines[0]).length - 1, 0) / turns.reduce((n, e) => n + e.length - 1, 0);
    const prompt = samples.reduce((n, s) => n + s.promptTokens, 0);
    return {
      ttft50: percentile(samples.map((s) => s.ttftMs), 0.5),
      ttft99: percentile(samples.map((s) => s.ttftMs), 0.99),
      e2e50: percentile(samples.map((s) => s.e2eMs), 0.5),
      e2e99: percentile(samples.map((s) => s.e2eMs), 0.99),
      cached: prompt === 0 ? 0 : samples.reduce((n, s) => n + s.cachedTokens, 0) / prompt,
      spread: [...perEngine.entries()].sort().map(([, n]) => n).join('/'),
      wallMs,
      sticky,
    };
  } finally {
    await gateway.stop();
  }
}

const results = new Map<string, RoundResult[]>(policies.map((p) => [p, []]));
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? policies : [...policies].reverse();
  for (const policy of order) {
    const r = await runPolicy(policy, round);
    results.get(policy)!.push(r);
    const f = (x: number) => x.toFixed(0);
    console.log(
      `round ${round + 1} ${policy.padEnd(16)} TTFT p50 ${f(r.ttft50)} p99 ${f(r.ttft99)} ms  E2E p50 ${f(r.e2e50)} p99 ${f(r.e2e99)} ms  cached ${(100 * r.cached).toFixed(1)}%  engines ${r.spread}  wall ${(r.wallMs / 1000).toFixed(1)} s  turns on the first turn's engine ${(100 * r.sticky).toFixed(0)}%`,
    );
  }
}

const [subject, baseline] = policies;
if (baseline !== undefined) {
  console.log(`\n${subject} / ${baseline}, per round (min / median / max over ${rounds} rounds):`);
  for (const metric of ['ttft50', 'ttft99', 'e2e50', 'e2e99'] as const) {
    const ratios = results.get(subject)!.map((r, i) => r[metric] / results.get(baseline)![i][metric]).sort((a, b) => a - b);
    console.log(`  ${metric.padEnd(7)} ${ratios[0].toFixed(3)} / ${ratios[Math.floor(ratios.length / 2)].toFixed(3)} / ${ratios[ratios.length - 1].toFixed(3)}`);
  }
}
