import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

function configFile(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-cli-'));
  const path = join(dir, 'switchyard.yaml');
  writeFileSync(path, yaml);
  return path;
}

describe('switchyard CLI', () => {
  it('lists its commands', () => {
    const res = run(['--help']);
    expect(res.status).toBe(0);
    for (const cmd of ['dev', 'serve', 'sim']) expect(res.stdout).toMatch(new RegExp(`^  ${cmd}\\s`, 'm'));
  });

  it('rejects an unknown command and an unknown flag with exit 2', () => {
    expect(run(['frobnicate']).status).toBe(2);
    const bad = run(['dev', '--engnies', '2']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('engnies');
  });

  it('exits non-zero naming the bad config field and why', () => {
    const path = configFile(`
engines:
  - id: a
    url: http://127.0.0.1:1
    models: [m]
timeouts:
  firstTokenMs: -5
routing:
  policy: fastest
`);
    const res = run(['serve', '--config', path]);
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('timeouts.firstTokenMs');
    expect(res.stderr).toContain('routing.policy');
    expect(res.stderr).toMatch(/too small|>0/i);
  });

  it('names a bad env override', () => {
    const path = configFile('engines: [{id: a, url: "http://127.0.0.1:1", models: [m]}]\nauth: {keys: [{principal: p, env: K}]}\n');
    const res = run(['serve', '--config', path], { PORT: 'eighty', K: 'x' });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('server.port (from env PORT)');
  });

  it('dev starts a gateway with simulated engines, answers, and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [cli, 'dev', '--engines', '2', '--port', '0', '--time-scale', '50'], {
      env: { ...process.env, SWITCHYARD_API_KEY: '', SWITCHYARD_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const lines = createInterface({ input: child.stdout! });
      let url = '';
      let key = '';
      let model = '';
      for await (const line of lines) {
        url ||= /gateway on (http:\/\/\S+)/.exec(line)?.[1] ?? '';
        model ||= /models:\s+(\S+)/.exec(line)?.[1]?.replace(/,$/, '') ?? '';
        key ||= /API key:\s+(sk-\S+)/.exec(line)?.[1] ?? '';
        if (url && key && model) break;
      }
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const res = await request(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.statusCode).toBe(200);
      const body = (await res.body.json()) as { choices: { message: { content: string } }[] };
      expect(body.choices[0]!.message.content.length).toBeGreaterThan(0);
    } finally {
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    }
  });

  it('dev --autoscale starts one engine process through the autoscaler, answers, and stops it on SIGTERM', async () => {
    const child = spawn(process.execPath, [cli, 'dev', '--autoscale', '--engines', '2', '--port', '0', '--time-scale', '50'], {
      env: { ...process.env, SWITCHYARD_API_KEY: '', SWITCHYARD_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let enginePid: number | undefined;
    try {
      const lines = createInterface({ input: child.stdout! });
      let url = '';
      let key = '';
      for await (const line of lines) {
        url ||= /gateway on (http:\/\/\S+)/.exec(line)?.[1] ?? '';
        key ||= /API key:\s+(sk-\S+)/.exec(line)?.[1] ?? '';
        if (url && key) break;
      }
      // The autoscaler brings the empty fleet to its minimum of one engine, which the gateway then routes to.
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        const res = await request(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'llama-3.1-8b-instruct', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
        });
        status = res.statusCode;
        await res.body.dump();
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status).toBe(200);
      const ready = (await (await request(`${url}/readyz`)).body.json()) as { healthyEngines: number };
      expect(ready.healthyEngines).toBe(1);
      enginePid = Number(execFileSync('pgrep', ['-P', String(child.pid), '-f', 'main.js sim']).toString().trim().split('\n')[0]);
      expect(enginePid).toBeGreaterThan(0);
    } finally {
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    }
    // The engine process went with it.
    expect(() => process.kill(enginePid!, 0)).toThrow();
  });
});
