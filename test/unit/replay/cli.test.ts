import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { runReplayCommand } from '../../../cli/replay.js';
import type { PolicySummary } from '../../../bench/replay/summary.js';

/** Runs the command in-process, quietly; what it printed on stdout. */
async function replay(argv: string[]): Promise<string> {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
  const err = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    await runReplayCommand(argv);
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
  return out.join('\n');
}

/** The exit code and stderr of a command that exits before replaying. */
async function exitOf(argv: string[]): Promise<{ code: number; stderr: string }> {
  const stderr: string[] = [];
  const exit = vi.spyOn(process, 'exit').mockImplementation((code) => {
    throw Object.assign(new Error('exit'), { code });
  });
  const err = vi.spyOn(console, 'error').mockImplementation((line: string) => void stderr.push(line));
  try {
    await runReplayCommand(argv);
    throw new Error('the command did not exit');
  } catch (e) {
    return { code: (e as { code: number }).code, stderr: stderr.join('\n') };
  } finally {
    exit.mockRestore();
    err.mockRestore();
  }
}

function file(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'replay-config-')), name);
  writeFileSync(path, text);
  return path;
}

type Report = { policies: { summary: PolicySummary }[]; closedLoop?: unknown; seed: number };
const readReport = (out: string): Report => JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));

describe('switchyard replay', () => {
  it('generates a trace, replays it per policy, and writes the table, JSON and HTML', async () => {
    const out = mkdtempSync(join(tmpdir(), 'replay-'));
    await replay(['--generate', 'multi-turn', '--requests', '60', '--engines', '2', '--policy', 'prefix-cache,round-robin', '--out', out]);
    expect(readdirSync(out).sort()).toEqual(['report.html', 'report.json', 'table.txt', 'trace-multi-turn.jsonl']);
    const report = readReport(out);
    expect(report).toMatchObject({ engines: 2, rateScale: 1, loadSignal: 'pending', hashing: 'approximate', seed: 1 });
    expect(report.closedLoop).toBeUndefined();
    expect(report.policies.map((p) => p.summary.policy)).toEqual(['prefix-cache', 'round-robin']);
    expect(readFileSync(join(out, 'table.txt'), 'utf8')).toMatch(/^prefix-cache +\d/m);
  });

  it('replays closed-loop users: --generate shared-prompt --users 16 --requests 200', async () => {
    const out = mkdtempSync(join(tmpdir(), 'replay-'));
    const table = await replay(['--generate', 'shared-prompt', '--users', '16', '--requests', '200', '--think-ms', '500', '--policy', 'prefix-cache,round-robin', '--out', out]);
    expect(readdirSync(out).sort()).toEqual(['report.html', 'report.json', 'table.txt']);
    expect(table).toContain('200 requests from shared-prompt, 4 engines, closed loop: 16 users, think time 500 ms mean');
    const report = readReport(out);
    expect(report.closedLoop).toEqual({ users: 16, thinkMs: 500 });
    for (const { summary } of report.policies) {
      expect(summary.requests).toBe(200);
      expect(summary.e2eMs.p99).toBeGreaterThan(summary.ttftMs.p99);
      expect(summary.prediction.e2e.median).toBeGreaterThanOrEqual(0);
    }
    expect(readFileSync(join(out, 'report.html'), 'utf8')).toContain('batch size per engine');
  });

  it('stops closed-loop users at --duration-s', async () => {
    const out = mkdtempSync(join(tmpdir(), 'replay-'));
    await replay(['--generate', 'conversations', '--users', '8', '--duration-s', '5', '--policy', 'round-robin', '--out', out]);
    const [{ summary }] = readReport(out).policies;
    // 8 users answered in about a second and thinking for one send a few dozen requests in 5 s, not 2,000.
    expect(summary.requests).toBeGreaterThan(8);
    expect(summary.requests).toBeLessThan(200);
  });

  it('--config replays the file\'s routing block as one more policy, named after the file', async () => {
    // The least-request preset spelt out: it must route exactly as the preset does.
    const config = file('spelt-out.yaml', 'routing:\n  scorers:\n    - name: least-request\n      weight: 1\n  picker: max-score\n');
    const out = mkdtempSync(join(tmpdir(), 'replay-'));
    await replay(['--generate', 'zipf-prompts', '--prompts', '3', '--users', '12', '--requests', '120', '--policy', 'least-request,round-robin', '--config', config, '--out', out]);
    const summaries = readReport(out).policies.map((p) => p.summary);
    expect(summaries.map((s) => s.policy)).toEqual(['least-request', 'round-robin', 'spelt-out.yaml']);
    const { policy: _a, ...preset } = summaries[0];
    const { policy: _b, ...fromConfig } = summaries[2];
    expect(fromConfig).toEqual(preset);
    expect(summaries[1].ttftMs).not.toEqual(summaries[2].ttftMs);

    const alone = mkdtempSync(join(tmpdir(), 'replay-'));
    await replay(['--generate', 'shared-prompt', '--requests', '40', '--config', config, '--out', alone]);
    expect(readReport(alone).policies.map((p) => p.summary.policy)).toEqual(['spelt-out.yaml']);
  });

  it('rejects a config file naming the bad field, through the config loader', async () => {
    const weight = file('bad.yaml', 'routing:\n  scorers:\n    - name: least-request\n      weight: -1\n');
    await expect(replay(['--generate', 'shared-prompt', '--requests', '10', '--config', weight])).rejects.toThrow(/routing\.scorers\[0\]\.weight/);
    const scorer = file('typo.yaml', 'routing:\n  scorers: [{ name: least-requests, weight: 1 }]\n');
    await expect(replay(['--generate', 'shared-prompt', '--requests', '10', '--config', scorer])).rejects.toThrow(/routing: unknown routing scorer "least-requests"/);

    // As a process: exit 1 with the field named, as `serve` does.
    const cli = fileURLToPath(new URL('../../../dist/cli/main.js', import.meta.url));
    const res = spawnSync(process.execPath, [cli, 'replay', '--generate', 'shared-prompt', '--requests', '10', '--config', weight], { encoding: 'utf8', timeout: 20_000 });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('routing.scorers[0].weight');
  });

  it('rejects flags that do not fit the workload, with exit 2 naming them', async () => {
    const cases: [string[], RegExp][] = [
      [['--trace', 'x.jsonl', '--users', '8'], /--users is for the closed-loop generators/],
      [['--generate', 'multi-turn', '--think-ms', '0'], /--think-ms is for the closed-loop generators/],
      [['--generate', 'shared-prompt', '--prompts', '4'], /--prompts is for --generate zipf-prompts/],
      [['--generate', 'conversations', '--rate-scale', '2'], /--rate-scale is for traces/],
      [['--generate', 'shared-prompt', '--users', '0'], /--users "0" is not valid/],
      [['--generate', 'shared-prompt', '--think-ms=-5'], /--think-ms "-5" is not valid/],
      [['--generate', 'nope'], /unknown generator "nope"; known: shared-system-prompt, multi-turn, shared-prompt, zipf-prompts, conversations/],
    ];
    for (const [argv, message] of cases) {
      const { code, stderr } = await exitOf(argv);
      expect(code, argv.join(' ')).toBe(2);
      expect(stderr, argv.join(' ')).toMatch(message);
    }
  });
});
