/**
 * One chat or text completion from submission to its last byte. Engine events become latency metrics (engine
 * time, as vLLM measures them) and the HTTP response (JSON, or SSE where headers go out with the first token, as
 * vLLM's StreamingResponse does). The per-token faults sit between the two: they change what the client sees,
 * not what the engine did.
 */

import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FaultSettings } from './faults.js';
import type { GenerationPlan } from './generation-plan.js';
import type { SimMetrics } from './metrics.js';
import { completionBody, type Endpoint, type ResponseHeader, type StreamFrames, streamFrames } from './responses.js';
import type { EngineEvent } from './timing-model.js';

const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8' };

export interface GenerationSetup {
  readonly res: ServerResponse;
  readonly endpoint: Endpoint;
  readonly header: ResponseHeader;
  readonly plan: GenerationPlan;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** The faults in force when the request arrived; changing them later does not affect it. */
  readonly faults: Readonly<FaultSettings>;
  readonly metrics: SimMetrics;
  /** Engine-clock arrival time, the origin of the latency metrics. */
  readonly arrivalMs: number;
  /** Removes the request from the engine when the client is gone before the engine finished. */
  readonly abortEngine: () => void;
}

export class Generation {
  private readonly setup: GenerationSetup;
  private readonly frames: StreamFrames | undefined;
  /** Tokens after which the die fault ends the response; null when it would not happen before the end. */
  private readonly dieAfter: number | null;
  private lastTokenAtMs = 0;
  private cachedTokens = 0;
  private engineDone = false;
  /** No more bytes go to the client: it left, the response ended, or a fault killed it. */
  private silenced = false;
  private delivery: Promise<void> = Promise.resolve();
  /** Frames held back while a whole generation is played at once, so they leave in one write. */
  private held: string | undefined;

  constructor(setup: GenerationSetup) {
    this.setup = setup;
    this.frames = setup.stream ? streamFrames(setup.endpoint, setup.header) : undefined;
    const dieAfter = setup.faults.dieMidStreamAfter;
    this.dieAfter = dieAfter !== null && dieAfter < setup.plan.output.ids.length ? dieAfter : null;
    setup.res.once('close', () => this.onClientClose());
  }

  onEngineEvent(event: EngineEvent): void {
    const { metrics, arrivalMs } = this.setup;
    switch (event.type) {
      case 'first_token':
        metrics.observeTimeToFirstToken((event.atMs - arrivalMs) / 1000);
        this.lastTokenAtMs = event.atMs;
        this.cachedTokens = event.cachedTokens;
        this.deliver(() => this.emitToken(0), true);
        break;
      case 'token':
        if (this.held === undefined) metrics.observeInterTokenLatency((event.atMs - this.lastTokenAtMs) / 1000);
        this.lastTokenAtMs = event.atMs;
        this.deliver(() => this.emitToken(event.index), true);
        break;
      case 'finished':
        this.engineDone = true;
        metrics.observeE2eLatency((event.atMs - arrivalMs) / 1000);
        metrics.countFinished(this.setup.plan.finishReason);
        this.deliver(() => this.emitEnd(), false);
        break;
      case 'preempted':
        // Recompute is invisible to the client beyond the pause; the engine's counter records it.
        break;
    }
  }

  /**
   * Plays the whole generation at once: the zero-latency mode, where the engine takes no time. A proxy benchmark
   * drives this path, so it writes the response in one go and skips the inter-token latencies, which would all be
   * zero and cost a tenth of the simulator's CPU to record.
   */
  completeInstantly(cachedTokens: number): void {
    const id = this.setup.header.id;
    const atMs = this.setup.arrivalMs;
    this.held = '';
    this.onEngineEvent({ type: 'first_token', id, atMs, cachedTokens });
    const count = this.setup.plan.output.ids.length;
    for (let index = 1; index < count; index++) this.onEngineEvent({ type: 'token', id, atMs, index });
    this.onEngineEvent({ type: 'finished', id, atMs });
    // The end frame (or a die) has flushed what was held; with the slow fault frames are still to come, one by one.
    this.held = undefined;
  }

  // With the slow fault every token waits its extra delay behind the previous one, so delays add up as they would
  // on a slow link or a slow engine; without it, bytes go out as the engine produces them.
  private deliver(action: () => void, isToken: boolean): void {
    const extraMs = this.setup.faults.slowMsPerToken;
    if (extraMs === 0) {
      action();
      return;
    }
    this.delivery = this.delivery.then(async () => {
      if (isToken && !this.silenced) await sleep(extraMs);
      action();
    });
  }

  private emitToken(index: number): void {
    if (this.silenced) return;
    if (this.dieAfter === 0) {
      this.die();
      return;
    }
    const dieNow = index + 1 === this.dieAfter;
    const { res, plan } = this.setup;
    if (this.frames !== undefined) {
      const isLast = index === plan.output.ids.length - 1;
      let frame = this.frames.token(plan.output.pieces[index]!, isLast ? plan.finishReason : null);
      if (index === 0) {
        res.writeHead(200, SSE_HEADERS);
        frame = this.frames.opening + frame;
      }
      if (!dieNow) {
        this.write(frame);
        return;
      }
      // Die only once the K tokens have reached the socket, so the client reliably sees exactly K.
      this.silenced = true;
      this.write(frame, () => this.die());
      return;
    }
    if (dieNow) this.die();
  }

  private emitEnd(): void {
    if (this.silenced) return;
    this.silenced = true;
    const { res, plan, endpoint, header } = this.setup;
    const usage = { promptTokens: plan.promptTokens, completionTokens: plan.output.ids.length, cachedTokens: this.cachedTokens };
    if (this.frames !== undefined) {
      res.end(this.takeHeld() + (this.setup.includeUsage ? this.frames.usage(usage) : '') + this.frames.done);
      return;
    }
    const body = completionBody(endpoint, header, plan.output.pieces.join(''), plan.finishReason, usage);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private write(frame: string, then?: () => void): void {
    if (this.held !== undefined && then === undefined) {
      this.held += frame;
      return;
    }
    this.setup.res.write(this.takeHeld() + frame, then);
  }

  private takeHeld(): string {
    if (this.held === undefined) return '';
    const held = this.held;
    this.held = '';
    return held;
  }

  private die(): void {
    this.silenced = true;
    // An in-process sim shares its process with whoever started it (dev mode, tests): 'exit' takes them all down,
    // which is why it is meant for a sim run by the CLI.
    if (this.setup.faults.dieMode === 'exit') process.exit(1);
    this.setup.res.destroy();
  }

  private onClientClose(): void {
    this.silenced = true;
    if (this.engineDone) return;
    this.engineDone = true;
    this.setup.abortEngine();
    this.setup.metrics.countFinished('abort');
  }
}
