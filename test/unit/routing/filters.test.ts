import { describe, expect, it } from 'vitest';
import { adapterFilter } from '../../../router/routing/plugins/adapter.js';
import { excludeFilter } from '../../../router/routing/plugins/exclude.js';
import { healthyFilter } from '../../../router/routing/plugins/healthy.js';
import { modelFilter } from '../../../router/routing/plugins/model.js';
import { poolFilter } from '../../../router/routing/plugins/pool.js';
import { engine, ids, request } from './fixtures.js';

describe('healthy filter', () => {
  it('drops unhealthy engines and keeps order', () => {
    const engines = [engine('c'), engine('a', { healthy: false }), engine('b')];
    expect(ids(healthyFilter.filter(request(), engines))).toEqual(['c', 'b']);
  });
});

describe('model filter', () => {
  it('keeps only engines that serve the requested model', () => {
    const engines = [
      engine('a', { models: ['llama', 'qwen'] }),
      engine('b', { models: ['qwen'] }),
      engine('c', { models: ['llama'] }),
    ];
    expect(ids(modelFilter.filter(request({ model: 'llama' }), engines))).toEqual(['a', 'c']);
    expect(ids(modelFilter.filter(request({ model: 'mistral' }), engines))).toEqual([]);
  });
});

describe('adapter filter', () => {
  const engines = [engine('a'), engine('b'), engine('c')];

  it('keeps only engines where the adapter is resident', () => {
    expect(ids(adapterFilter.filter(request({ adapter: { name: 'sql-lora', residentOn: new Set(['c', 'a']) } }), engines))).toEqual(['a', 'c']);
    expect(ids(adapterFilter.filter(request({ adapter: { name: 'sql-lora', residentOn: new Set() } }), engines))).toEqual([]);
  });

  it('passes requests without an adapter unchanged', () => {
    const out = adapterFilter.filter(request(), engines);
    expect(ids(out)).toEqual(['a', 'b', 'c']);
    expect(out).not.toBe(engines);
  });
});

describe('pool filter', () => {
  const engines = [engine('a', { pool: 'h100' }), engine('b', { pool: 'a10' }), engine('c')];

  it('keeps every engine when the request names no pools', () => {
    const out = poolFilter.filter(request({ pools: undefined }), engines);
    expect(ids(out)).toEqual(['a', 'b', 'c']);
    expect(out).not.toBe(engines);
  });

  it('keeps engines whose pool label is listed and drops unlabelled ones', () => {
    expect(ids(poolFilter.filter(request({ pools: ['a10', 'l4'] }), engines))).toEqual(['b']);
    expect(ids(poolFilter.filter(request({ pools: ['h100', 'a10'] }), engines))).toEqual(['a', 'b']);
    expect(ids(poolFilter.filter(request({ pools: [] }), engines))).toEqual([]);
  });
});

describe('exclude filter', () => {
  it('drops engines already tried', () => {
    const engines = [engine('a'), engine('b'), engine('c')];
    expect(ids(excludeFilter.filter(request({ exclude: new Set(['b']) }), engines))).toEqual(['a', 'c']);
    expect(ids(excludeFilter.filter(request({ exclude: new Set() }), engines))).toEqual(['a', 'b', 'c']);
  });
});
