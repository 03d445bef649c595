import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authHeaders, chatBody, startCluster, testModel, type Cluster } from '../helpers/cluster.js';

interface ErrorShape {
  error: { message: string; type: string; param: string | null; code: string | null };
}

function expectErrorShape(body: unknown): ErrorShape['error'] {
  const err = (body as ErrorShape).error;
  expect(Object.keys(err).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof err.message).toBe('string');
  expect(err.message.length).toBeGreaterThan(0);
  expect(typeof err.type).toBe('string');
  return err;
}

describe('bad input gets an OpenAI-shaped error with the right status', () => {
  let cluster: Cluster;
  const post = (body: string | Buffer, headers = authHeaders(), path = '/v1/chat/completions') =>
    request(`${cluster.url}${path}`, { method: 'POST', headers, body });

  beforeAll(async () => {
    cluster = await startCluster({ engines: 1, config: { server: { bodyLimitBytes: 4096 } } });
  });
  afterAll(() => cluster.close());

  it('401 without a key, before reading the body', async () => {
    const res = await post('{not json', { 'content-type': 'application/json' });
    expect(res.statusCode).toBe(401);
    const err = expectErrorShape(await res.body.json());
    expect(err.type).toBe('authentication_error');
    expect(err.code).toBe('missing_api_key');
  });

  it('401 with a wrong key, and the key is not echoed back', async () => {
    const res = await post(chatBody(), authHeaders({ authorization: 'Bearer sk-wrong-secret-value' }));
    expect(res.statusCode).toBe(401);
    const text = await res.body.text();
    expect(text).not.toContain('sk-wrong-secret-value');
    expect(expectErrorShape(JSON.parse(text)).code).toBe('invalid_api_key');
  });

  it('400 on malformed JSON', async () => {
    const res = await post('{"model": "x", "messages": [');
    expect(res.statusCode).toBe(400);
    const err = expectErrorShape(await res.body.json());
    expect(err.type).toBe('invalid_request_error');
    expect(err.code).toBe('invalid_json');
  });

  it('400 on an empty body', async () => {
    const res = await post('');
    expect(res.statusCode).toBe(400);
    expectErrorShape(await res.body.json());
  });

  it('400 naming a missing field', async () => {
    const res = await post(JSON.stringify({ model: testModel }));
    expect(res.statusCode).toBe(400);
    const err = expectErrorShape(await res.body.json());
    expect(err.param).toBe('messages');
  });

  it('400 naming a field of the wrong type, without coercing it', async () => {
    const res = await post(chatBody({ stream: 'true' }));
    expect(res.statusCode).toBe(400);
    expect(expectErrorShape(await res.body.json()).param).toBe('stream');
    const nested = await post(JSON.stringify({ model: testModel, messages: [{ role: 'wizard', content: 'x' }] }));
    expect(nested.statusCode).toBe(400);
    expect(expectErrorShape(await nested.body.json()).param).toBe('messages[0].role');
  });

  it('400 when the body is JSON but not an object', async () => {
    const res = await post('[1,2,3]');
    expect(res.statusCode).toBe(400);
    expectErrorShape(await res.body.json());
  });

  it('404 for a model no engine serves, without a metric series per made-up name', async () => {
    const res = await post(chatBody({ model: 'no-such-model' }));
    expect(res.statusCode).toBe(404);
    const err = expectErrorShape(await res.body.json());
    expect(err.code).toBe('model_not_found');
    expect(err.param).toBe('model');
    const metrics = await (await request(`${cluster.url}/metrics`)).body.text();
    expect(metrics).not.toContain('no-such-model');
    expect(metrics).toMatch(/switchyard_requests_total\{model="\(unknown\)",engine="none",status="404"\} 1/);
  });

  it('413 for a body over the limit', async () => {
    const big = chatBody({ messages: [{ role: 'user', content: 'x'.repeat(10_000) }] });
    const res = await post(big);
    expect(res.statusCode).toBe(413);
    expect(expectErrorShape(await res.body.json()).code).toBe('request_too_large');
  });

  it('404 for an unknown route, in the same shape', async () => {
    const res = await request(`${cluster.url}/v1/nope`, { headers: authHeaders() });
    expect(res.statusCode).toBe(404);
    expectErrorShape(await res.body.json());
  });

  it('passes an engine 4xx through without retrying it', async () => {
    const res = await post(chatBody({ model: testModel, max_tokens: 10_000_000 }));
    const body = await res.body.json();
    expect(res.statusCode).toBe(400);
    expectErrorShape(body);
    expect(res.headers['x-switchyard-pod']).toBe('sim-0');
  });

  it('survives a burst of garbage and still answers', async () => {
    const garbage = ['', 'null', '1', '"s"', '{"model":null}', '{"model":"m","messages":"no"}', '\u0000\u0001', '{"model":"m","messages":[null]}'];
    for (const g of garbage) {
      const res = await post(g);
      expect(res.statusCode).toBe(400);
      expectErrorShape(await res.body.json());
    }
    const ok = await post(chatBody());
    expect(ok.statusCode).toBe(200);
    await ok.body.json();
  });
});
