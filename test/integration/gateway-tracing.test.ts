import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authHeaders, chatBody, startCluster, type Cluster } from '../helpers/cluster.js';

describe('a span per request', () => {
  const exporter = new InMemorySpanExporter();
  let cluster: Cluster;

  beforeAll(async () => {
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    cluster = await startCluster({ engines: 2, config: { routing: { policy: 'round-robin' } } });
  });
  afterAll(async () => {
    await cluster.close();
    trace.disable();
  });

  it('carries the model, engine, policy and retries', async () => {
    cluster.sims[0]!.setFaults({ failNext: 1, failStatus: 503 });
    const pods: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await request(`${cluster.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      pods.push(String(res.headers['x-switchyard-pod']));
      await res.body.json();
    }
    const spans = exporter.getFinishedSpans().filter((s) => s.name === 'switchyard.request');
    expect(spans).toHaveLength(2);
    for (const span of spans) {
      expect(span.attributes['switchyard.model']).toBe('test-model');
      expect(span.attributes['switchyard.policy']).toBe('round-robin');
    }
    expect(spans.map((s) => s.attributes['switchyard.engine'])).toEqual(pods);
    const retried = spans.filter((s) => s.attributes['switchyard.retries'] === 1);
    expect(retried).toHaveLength(1);
    expect(retried[0]!.attributes['switchyard.engine']).toBe('sim-1');
    expect(retried[0]!.events.map((e) => [e.name, e.attributes?.['switchyard.engine']])).toEqual([['retry', 'sim-0']]);
  });
});
