import type { EngineKind } from '../core/engine.js';

/** What a sidecar can supervise: the three engine kinds, and the simulator, which speaks vLLM's API and metrics. */
export type SidecarEngineKind = EngineKind | 'sim';

export const SIDECAR_ENGINE_KINDS: readonly SidecarEngineKind[] = ['vllm', 'sglang', 'llamacpp', 'sim'];

export function isSidecarEngineKind(value: string): value is SidecarEngineKind {
  return (SIDECAR_ENGINE_KINDS as readonly string[]).includes(value);
}

/** The kind whose metric names and adapter API the engine has, and the one it registers as. */
export function apiKindOf(kind: SidecarEngineKind): EngineKind {
  return kind === 'sim' ? 'vllm' : kind;
}
