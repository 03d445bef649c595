import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { runReplayCommand } from '../../../cli/replay.js';

describe('switchyard replay', () => {
  it('generates a trace, replays it per policy, and writes the table, JSON and HTML', async () => {
    const out = mkdtempSync(join(tmpdir(), 'replay-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      await runReplayCommand(['--generate', 'multi-turn', '--requests', '60', '--engines', '2', '--policy', 'prefix-cache,round-robin', '--out', out]);
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
    expect(readdirSync(out).sort()).toEqual(['report.html', 'report.json', 'table.txt', 'trace-multi-turn.jsonl']);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report).toMatchObject({ engines: 2, rateScale: 1, loadSignal: 'pending', hashing: 'approximate', seed: 1 });
    expect(report.policies.map((p: { summary: { policy: string } }) => p.summary.policy)).toEqual(['prefix-cache', 'round-robin']);
    expect(readFileSync(join(out, 'table.txt'), 'utf8')).toMatch(/^prefix-cache +\d/m);
  });
});
