/**
 * Resident LoRA adapters of one simulated engine, with vLLM's runtime-loading semantics: an adapter is usable
 * (listed in /v1/models, accepted as `model`) only once its load has completed; a name can be loaded once; at most
 * `maxLoras` adapters are resident or loading at a time (real vLLM would evict from its CPU cache instead, but a
 * placement controller must never rely on that, so the simulator refuses loudly).
 */

import { SimError } from './errors.js';

export interface LoraAdapter {
  readonly name: string;
  readonly path: string;
}

export class LoraRegistry {
  private readonly resident = new Map<string, LoraAdapter>();
  private readonly loading = new Set<string>();

  constructor(
    readonly maxLoras: number,
    /** Waits out the simulated load time (already scaled by the caller). */
    private readonly waitForLoad: () => Promise<void>,
  ) {}

  get(name: string): LoraAdapter | undefined {
    return this.resident.get(name);
  }

  /** Resident adapters in load order. */
  list(): LoraAdapter[] {
    return [...this.resident.values()];
  }

  async load(name: string, path: string): Promise<void> {
    if (this.resident.has(name) || this.loading.has(name)) {
      throw new SimError(400, `The lora adapter '${name}' has already been loaded.`, { type: 'InvalidUserInput' });
    }
    if (this.resident.size + this.loading.size >= this.maxLoras) {
      throw new SimError(
        400,
        `Cannot load LoRA adapter '${name}': ${this.maxLoras} adapters are already resident (max_loras=${this.maxLoras}); unload one first.`,
        { type: 'BadRequestError' },
      );
    }
    this.loading.add(name);
    try {
      await this.waitForLoad();
    } finally {
      this.loading.delete(name);
    }
    this.resident.set(name, { name, path });
  }

  unload(name: string): void {
    if (!this.resident.delete(name)) {
      throw new SimError(404, `The lora adapter '${name}' cannot be found.`, { type: 'NotFoundError' });
    }
  }
}
