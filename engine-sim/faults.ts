/**
 * Fault switches for testing a gateway's failure handling. They apply to inference endpoints only
 * (/v1/chat/completions, /v1/completions, /v1/embeddings), never to /health or /metrics, so a test can break
 * serving while health checks and scrapes keep working, or the reverse with the engine's own switches elsewhere.
 *
 * Setting faults replaces all of them: fields left out return to "no fault". That makes a test's intent explicit
 * and `{}` a reset.
 */

import { z } from 'zod';

export type DieMode = 'socket' | 'exit';

export interface FaultSettings {
  /** Inference requests still to fail, with `failStatus`, before any other processing. Counts down. */
  failNext: number;
  failStatus: number;
  /** Send nothing before the first byte: for `hangMs` milliseconds, then serve normally, or (hangMs 0) never. */
  hangBeforeFirstByte: boolean;
  hangMs: number;
  /**
   * Die after this many output tokens: a stream after writing them, a non-streamed request once they are generated.
   * `socket` destroys the connection; `exit` ends the process (meaningful only for a sim run by the CLI).
   */
  dieMidStreamAfter: number | null;
  dieMode: DieMode;
  /** Extra wall-clock milliseconds before each output token reaches the client (not scaled by time-scale). */
  slowMsPerToken: number;
}

export const NO_FAULTS: Readonly<FaultSettings> = {
  failNext: 0,
  failStatus: 500,
  hangBeforeFirstByte: false,
  hangMs: 0,
  dieMidStreamAfter: null,
  dieMode: 'socket',
  slowMsPerToken: 0,
};

/** Accepts any subset of the settings, the rest defaulting to NO_FAULTS; unknown keys are rejected so a typo in a test fails loudly. */
export const faultSettingsSchema = z.strictObject({
  failNext: z.number().int().min(0).default(NO_FAULTS.failNext),
  failStatus: z.number().int().min(400).max(599).default(NO_FAULTS.failStatus),
  hangBeforeFirstByte: z.boolean().default(NO_FAULTS.hangBeforeFirstByte),
  hangMs: z.number().min(0).default(NO_FAULTS.hangMs),
  dieMidStreamAfter: z.number().int().min(0).nullable().default(NO_FAULTS.dieMidStreamAfter),
  dieMode: z.enum(['socket', 'exit']).default(NO_FAULTS.dieMode),
  slowMsPerToken: z.number().min(0).default(NO_FAULTS.slowMsPerToken),
});

export class FaultState {
  private settings: FaultSettings = { ...NO_FAULTS };

  get current(): Readonly<FaultSettings> {
    return this.settings;
  }

  /** Replaces all faults with `faults` (validated; throws a ZodError when invalid). */
  set(faults: Partial<FaultSettings>): void {
    this.settings = faultSettingsSchema.parse(faults);
  }

  /** The status to fail the current request with, consuming one of failNext; undefined when it should proceed. */
  takeFailure(): number | undefined {
    if (this.settings.failNext === 0) return undefined;
    this.settings.failNext--;
    return this.settings.failStatus;
  }
}
