/**
 * What the autoscaler acts through: a scaling target's replica count, read and set. Kubernetes (the scale
 * subresource of a Deployment or StatefulSet) in production; local processes (sidecar + simulated engine per
 * replica) for `switchyard dev --autoscale` and the tests.
 */
export interface Actuator {
  /** A short name for logs and metrics: "kubernetes", "local". */
  readonly kind: string;
  /** Replicas the target has now (spec), or asked for and not yet ready counted as present. */
  currentReplicas(target: string): Promise<number>;
  /** Sets the target's replicas; resolves once the change was accepted (not once the replicas are ready). */
  scale(target: string, replicas: number): Promise<void>;
  close(): Promise<void>;
}
