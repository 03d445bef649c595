import { DEFAULT_TIMING } from '../engine-sim/timing-model.js';
import { type SimOptions, SIM_DEFAULTS, startSim } from '../engine-sim/server.js';
import type { FaultSettings } from '../engine-sim/faults.js';
import { numberFlag, parseCommandArgs, untilSignal, usageError } from './args.js';

const help = `switchyard sim --model NAME [--port P] [options]

One simulated vLLM engine (OpenAI API, /metrics with vLLM's names, LoRA endpoints, prefix cache, continuous-
batching timing model). Prints "switchyard sim listening on URL model=NAME" once it accepts requests (followed by
" kv-events=ENDPOINT" when it publishes KV events).

  --model NAME                   served model name (required)
  --port P                       port, 0 for any free one (default ${SIM_DEFAULTS.port})
  --host H                       address to bind (default ${SIM_DEFAULTS.host})
  --time-scale X                 run the engine clock X times faster than real time (default ${SIM_DEFAULTS.timeScale})
  --zero-latency                 answer at once, no simulated GPU time (for proxy benchmarks)
  --seed N                       vary generated text between sims (default ${SIM_DEFAULTS.seed})

KV events (vLLM's format: msgpack KVEventBatch per engine step on a ZMQ PUB socket, vLLM block hashes):
  --kv-events-endpoint EP        bind the PUB socket here, e.g. tcp://127.0.0.1:5557 (port * for any free one)
  --kv-events-topic T            topic frame of every message (default '')
  --kv-events-encoding E         array (msgspec array_like) or map (default array)

Engine profile (defaults: Llama-3.1-8B BF16 on one H100):
  --kv-capacity-tokens N         KV cache size in tokens (default ${SIM_DEFAULTS.kvCapacityTokens})
  --max-model-len N              context window (default ${SIM_DEFAULTS.maxModelLen}, at most the KV capacity)
  --max-num-seqs N               running requests per batch (default ${DEFAULT_TIMING.maxNumSeqs})
  --max-num-batched-tokens N     tokens per step (default ${DEFAULT_TIMING.maxNumBatchedTokens})
  --prefill-tokens-per-sec N     prefill throughput (default ${DEFAULT_TIMING.prefillTokensPerSec})
  --decode-base-ms MS            cost of every step (default ${DEFAULT_TIMING.decodeBaseMs})
  --decode-ms-per-1k-kv-tokens MS  added per 1,000 tokens of context in the batch (default ${DEFAULT_TIMING.decodeMsPer1kKvTokens})
  --output-len-mean N            mean answer length without max_tokens (default ${SIM_DEFAULTS.outputLenMean})
  --output-len-max N             cap on that length (default 8 x mean)
  --max-loras N                  resident LoRA adapters (default ${SIM_DEFAULTS.maxLoras})
  --lora-load-ms MS              adapter load time, engine clock (default ${SIM_DEFAULTS.loraLoadMs})

Faults (inference endpoints only; change at runtime with GET/POST/DELETE /sim/faults):
  --fail-next N                  fail the next N requests
  --fail-status S                with this status (default 500)
  --hang-before-first-byte       never send a byte (until the client gives up), or --hang-ms then answer
  --hang-ms MS
  --die-mid-stream-after K       end the response after K output tokens
  --die-mode socket|exit         by destroying the connection (default) or exiting the process
  --slow-ms-per-token MS         extra wall-clock delay before each token`;

const integerAtLeast = (min: number) => (n: number) => Number.isInteger(n) && n >= min;
const positive = (n: number) => n > 0;
const nonNegative = (n: number) => n >= 0;

export async function runSimCommand(argv: string[]): Promise<void> {
  const flags = parseCommandArgs(
    'sim',
    help,
    {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'time-scale': { type: 'string' },
      'zero-latency': { type: 'boolean' },
      seed: { type: 'string' },
      'kv-events-endpoint': { type: 'string' },
      'kv-events-topic': { type: 'string' },
      'kv-events-encoding': { type: 'string' },
      'kv-capacity-tokens': { type: 'string' },
      'max-model-len': { type: 'string' },
      'max-num-seqs': { type: 'string' },
      'max-num-batched-tokens': { type: 'string' },
      'prefill-tokens-per-sec': { type: 'string' },
      'decode-base-ms': { type: 'string' },
      'decode-ms-per-1k-kv-tokens': { type: 'string' },
      'output-len-mean': { type: 'string' },
      'output-len-max': { type: 'string' },
      'max-loras': { type: 'string' },
      'lora-load-ms': { type: 'string' },
      'fail-next': { type: 'string' },
      'fail-status': { type: 'string' },
      'hang-before-first-byte': { type: 'boolean' },
      'hang-ms': { type: 'string' },
      'die-mid-stream-after': { type: 'string' },
      'die-mode': { type: 'string' },
      'slow-ms-per-token': { type: 'string' },
    },
    argv,
  );
  const optional = (flag: keyof typeof flags, check: (n: number) => boolean): number | undefined => {
    const value = flags[flag];
    return typeof value === 'string' ? numberFlag('sim', flag, value, 0, check) : undefined;
  };

  if (flags.model === undefined || flags.model === '') usageError('sim', '--model NAME is required', help);
  const kvEventsEncoding = flags['kv-events-encoding'];
  if (kvEventsEncoding !== undefined && kvEventsEncoding !== 'array' && kvEventsEncoding !== 'map') {
    usageError('sim', `--kv-events-encoding ${JSON.stringify(kvEventsEncoding)} is not valid (array or map)`, help);
  }
  const kvEventsEndpoint = flags['kv-events-endpoint'];
  if (kvEventsEndpoint !== undefined && !/^(tcp|ipc):\/\/./.test(kvEventsEndpoint)) {
    usageError('sim', `--kv-events-endpoint ${JSON.stringify(kvEventsEndpoint)} is not a ZMQ endpoint (tcp://HOST:PORT)`, help);
  }
  const dieMode = flags['die-mode'];
  if (dieMode !== undefined && dieMode !== 'socket' && dieMode !== 'exit') usageError('sim', `--die-mode ${JSON.stringify(dieMode)} is not valid (socket or exit)`, help);

  const faults: Partial<FaultSettings> = {
    failNext: optional('fail-next', integerAtLeast(0)),
    failStatus: optional('fail-status', (n) => Number.isInteger(n) && n >= 400 && n <= 599),
    hangBeforeFirstByte: flags['hang-before-first-byte'],
    hangMs: optional('hang-ms', nonNegative),
    dieMidStreamAfter: optional('die-mid-stream-after', integerAtLeast(0)),
    dieMode,
    slowMsPerToken: optional('slow-ms-per-token', nonNegative),
  };
  const options: SimOptions = {
    model: flags.model,
    host: flags.host,
    port: optional('port', (n) => integerAtLeast(0)(n) && n < 65536),
    timeScale: optional('time-scale', positive),
    zeroLatency: flags['zero-latency'],
    seed: optional('seed', Number.isInteger),
    kvEventsEndpoint,
    kvEventsTopic: flags['kv-events-topic'],
    kvEventsEncoding,
    kvCapacityTokens: optional('kv-capacity-tokens', integerAtLeast(1)),
    maxModelLen: optional('max-model-len', integerAtLeast(1)),
    maxNumSeqs: optional('max-num-seqs', integerAtLeast(1)),
    maxNumBatchedTokens: optional('max-num-batched-tokens', integerAtLeast(1)),
    prefillTokensPerSec: optional('prefill-tokens-per-sec', positive),
    decodeBaseMs: optional('decode-base-ms', positive),
    decodeMsPer1kKvTokens: optional('decode-ms-per-1k-kv-tokens', positive),
    outputLenMean: optional('output-len-mean', positive),
    outputLenMax: optional('output-len-max', integerAtLeast(1)),
    maxLoras: optional('max-loras', integerAtLeast(0)),
    loraLoadMs: optional('lora-load-ms', nonNegative),
    faults,
  };

  const sim = await startSim(options);
  console.log(`switchyard sim listening on ${sim.url} model=${sim.model}${sim.kvEventsEndpoint === undefined ? '' : ` kv-events=${sim.kvEventsEndpoint}`}`);
  await untilSignal();
  await sim.close();
}
