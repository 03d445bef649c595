import type { KubeConfig } from '@kubernetes/client-node';
import { z } from 'zod';
import type { Actuator } from '../actuator.js';
import type { KubernetesActuatorOptions } from './kubernetes.js';
import { localActuator, type LocalActuatorOptions } from './local.js';

export { localActuator, type LocalActuator, type LocalActuatorOptions, type LocalReplica } from './local.js';
export type { KubernetesActuatorOptions, ScalableKind } from './kubernetes.js';

/** What the autoscaler acts through, as written in its config. */
export const ActuatorConfigSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('kubernetes'),
      namespace: z.string().min(1),
      resource: z.enum(['Deployment', 'StatefulSet']).default('Deployment'),
      /** The Deployment's or StatefulSet's name. */
      name: z.string().min(1),
    })
    .strict(),
  z
    .object({
      kind: z.literal('local'),
      /** argv of one replica with {port} {enginePort} {index} {host} placeholders (see localActuator). */
      command: z.array(z.string()).min(1).refine((c) => c[0] !== '', 'the executable must not be empty'),
      /** Replica i listens on basePort + 2i (sidecar) and basePort + 2i + 1 (engine). */
      basePort: z.number().int().min(1).max(65534),
      host: z.string().min(1).default('127.0.0.1'),
      cwd: z.string().min(1).optional(),
      env: z.record(z.string(), z.string()).optional(),
      stopTimeoutMs: z.number().int().positive().default(10_000),
      maxReplicas: z.number().int().nonnegative().default(64),
      output: z.enum(['inherit', 'ignore', 'stderr']).default('stderr'),
    })
    .strict(),
]);

/** The parsed config (defaults applied). */
export type ActuatorConfig = z.output<typeof ActuatorConfigSchema>;
/** The config as written (fields with defaults optional). */
export type ActuatorConfigInput = z.input<typeof ActuatorConfigSchema>;

/** What config cannot hold: a KubeConfig built in code (tests), the local replicas' callbacks. */
export interface ActuatorHooks {
  readonly kubeConfig?: KubeConfig;
  readonly onChange?: LocalActuatorOptions['onChange'];
  readonly onExit?: LocalActuatorOptions['onExit'];
}

/**
 * The actuator a config describes. The Kubernetes client is loaded on first use, so a process that runs local
 * replicas never imports it.
 */
export function createActuator(cfg: ActuatorConfig, hooks: ActuatorHooks = {}): Actuator {
  switch (cfg.kind) {
    case 'local':
      return localActuator({
        command: cfg.command,
        basePort: cfg.basePort,
        host: cfg.host,
        cwd: cfg.cwd,
        env: cfg.env,
        stopTimeoutMs: cfg.stopTimeoutMs,
        maxReplicas: cfg.maxReplicas,
        output: cfg.output,
        onChange: hooks.onChange,
        onExit: hooks.onExit,
      });
    case 'kubernetes':
      return lazyKubernetesActuator({ namespace: cfg.namespace, kind: cfg.resource, name: cfg.name, kubeConfig: hooks.kubeConfig });
  }
}

function lazyKubernetesActuator(opts: KubernetesActuatorOptions): Actuator {
  let actuator: Promise<Actuator> | undefined;
  const get = (): Promise<Actuator> => (actuator ??= import('./kubernetes.js').then((m) => m.kubernetesActuator(opts)));
  return {
    kind: 'kubernetes',
    currentReplicas: async (target) => (await get()).currentReplicas(target),
    scale: async (target, replicas) => (await get()).scale(target, replicas),
    close: async () => {
      if (actuator !== undefined) await (await actuator.catch(() => undefined))?.close();
    },
  };
}
