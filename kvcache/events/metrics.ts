import { Counter, Histogram, type Registry } from 'prom-client';

/** Prometheus series of KV event ingestion, one `engine` label per subscription. */
export interface KvEventMetrics {
  readonly batches: Counter<'engine'>;
  readonly events: Counter<'engine' | 'type'>;
  readonly decodeErrors: Counter<'engine'>;
  readonly sequenceGaps: Counter<'engine'>;
  readonly missedBatches: Counter<'engine'>;
  readonly lag: Histogram<'engine'>;
}

// From loopback delivery to a badly backed-up engine; the index is useful when this stays well under a second.
const lagBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function createKvEventMetrics(registry: Registry): KvEventMetrics {
  return {
    batches: new Counter({
      name: 'switchyard_kv_event_batches_total',
      help: 'KV event batches applied to the prefix index',
      labelNames: ['engine'],
      registers: [registry],
    }),
    events: new Counter({
      name: 'switchyard_kv_events_total',
      help: 'KV events applied to the prefix index, by type (BlockStored, BlockRemoved, AllBlocksCleared)',
      labelNames: ['engine', 'type'],
      registers: [registry],
    }),
    decodeErrors: new Counter({
      name: 'switchyard_kv_event_decode_errors_total',
      help: 'KV event messages dropped because they could not be decoded',
      labelNames: ['engine'],
      registers: [registry],
    }),
    sequenceGaps: new Counter({
      name: 'switchyard_kv_event_sequence_gaps_total',
      help: 'Times the batch sequence number skipped ahead (batches lost between engine and router)',
      labelNames: ['engine'],
      registers: [registry],
    }),
    missedBatches: new Counter({
      name: 'switchyard_kv_event_missed_batches_total',
      help: 'KV event batches known lost from sequence gaps',
      labelNames: ['engine'],
      registers: [registry],
    }),
    lag: new Histogram({
      name: 'switchyard_kv_event_lag_seconds',
      help: 'Time from the end of the engine step (the batch ts) to the batch applied to the index',
      labelNames: ['engine'],
      buckets: lagBuckets,
      registers: [registry],
    }),
  };
}
