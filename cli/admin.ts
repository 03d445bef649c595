import { parseArgs } from 'node:util';
import { request } from 'undici';
import { usageError } from './args.js';

const help = `switchyard admin <group> <action> [options]

Manages a running gateway through its admin API (/admin/). The admin key is env SWITCHYARD_ADMIN_KEY.
  --url URL    the gateway (default http://127.0.0.1:$PORT, else http://127.0.0.1:8080)

  tenant create NAME [--weight W] [--priority P] [--rpm N] [--tpm N]
  tenant list
  tenant update NAME [--name NEW] [--weight W] [--priority P] [--rpm N] [--tpm N]
  key create --tenant NAME [--expires ISO-8601]   prints the new key alone on the last line, once
  key list --tenant NAME                          ids and display prefixes, never the keys
  key revoke ID
  quota set --tenant NAME [--model M] [--key ID] [--rpm N] [--tpm N]   (neither --rpm nor --tpm: removes that quota)
  model register NAME [--all-tenants]   restrict a model to granted tenants (or open it to all with --all-tenants)
  model allow NAME --tenant T           grant a registered model to a tenant
  model disallow NAME --tenant T
  model unregister NAME                 open the model to every tenant again (unregistered models are open)
  model list [--json]
  adapter register NAME --base MODEL --path PATH (--tenant T | --public) [--rank R]
                                        register a LoRA adapter of MODEL, loaded from PATH (a path or URI the
                                        engine reads); owned by tenant T, or --public for every tenant
  adapter list [--json]                 NAME, BASE, OWNER, RANK, ENGINES (engine:state where it is placed)
  adapter remove NAME
  usage [--tenant NAME] [--since ISO-8601] [--json]                  sums per tenant and model

Exit status: 0 done, 1 the gateway refused or could not be reached, 2 bad usage.`;

const options = {
  url: { type: 'string' },
  weight: { type: 'string' },
  priority: { type: 'string' },
  rpm: { type: 'string' },
  tpm: { type: 'string' },
  name: { type: 'string' },
  tenant: { type: 'string' },
  expires: { type: 'string' },
  model: { type: 'string' },
  key: { type: 'string' },
  since: { type: 'string' },
  json: { type: 'boolean' },
  'all-tenants': { type: 'boolean' },
  base: { type: 'string' },
  path: { type: 'string' },
  rank: { type: 'string' },
  public: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Flags = { [K in keyof typeof options]?: (typeof options)[K]['type'] extends 'boolean' ? boolean : string };

/** An error the admin API returned, or a network failure: printed on stderr, exit 1. */
class AdminCallError extends Error {}

export async function runAdminCommand(argv: string[]): Promise<void> {
  let parsed: { values: Flags; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as { values: Flags; positionals: string[] };
  } catch (err) {
    return usageError('admin', (err as Error).message, help);
  }
  const flags = parsed.values;
  if (flags.help === true || parsed.positionals.length === 0) {
    console.log(help);
    if (flags.help !== true) process.exit(2);
    return;
  }
  const adminKey = process.env.SWITCHYARD_ADMIN_KEY;
  const [group, action, ...rest] = parsed.positionals;
  const base = (flags.url ?? `http://127.0.0.1:${process.env.PORT || '8080'}`).replace(/\/+$/, '');
  if (!/^https?:\/\/\S+$/.test(base)) usageError('admin', `--url ${JSON.stringify(flags.url)} is not an http(s) URL`);
  const allowed = (...names: (keyof Flags)[]) => {
    for (const k of Object.keys(flags) as (keyof Flags)[]) {
      if (k !== 'url' && !names.includes(k)) usageError('admin', `--${k} does not apply to "${[group, action].filter(Boolean).join(' ')}"`, help);
    }
  };
  const positionals = (n: number, what: string) => {
    const given = group === 'usage' ? [action, ...rest].filter((x) => x !== undefined) : rest;
    if (given.length !== n) usageError('admin', `"${[group, action].filter(Boolean).join(' ')}" takes ${what}`, help);
    return given;
  };
  const int = (flag: 'rpm' | 'tpm' | 'priority') => {
    const v = flags[flag];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (v.trim() === '' || !Number.isSafeInteger(n) || (flag !== 'priority' && n < 0)) usageError('admin', `--${flag} ${JSON.stringify(v)} is not a whole number${flag !== 'priority' ? ' >= 0' : ''}`);
    return n;
  };
  const weight = () => {
    const v = flags.weight;
    if (v === undefined) return undefined;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n <= 0) usageError('admin', `--weight ${JSON.stringify(v)} is not a number > 0`);
    return n;
  };
  const requireTenant = () => flags.tenant ?? usageError('admin', '--tenant NAME is required', help);
  const call = (method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, body?: unknown) => {
    if (adminKey === undefined || adminKey === '') usageError('admin', 'set env SWITCHYARD_ADMIN_KEY to the gateway\'s admin key');
    return callApi(base, adminKey, method, path, body);
  };
  const seg = encodeURIComponent;

  try {
    switch (`${group} ${action ?? ''}`.trim()) {
      case 'tenant create': {
        allowed('weight', 'priority', 'rpm', 'tpm');
        const [name] = positionals(1, 'a tenant NAME');
        const t = await call('POST', '/admin/tenants', dropUndefined({ name, weight: weight(), priority: int('priority'), rpm: int('rpm'), tpm: int('tpm') }));
        printTenants([t as TenantView]);
        return;
      }
      case 'tenant list': {
        allowed('json');
        positionals(0, 'no arguments');
        const res = (await call('GET', '/admin/tenants')) as { data: TenantView[] };
        if (flags.json === true) console.log(JSON.stringify(res.data, null, 2));
        else printTenants(res.data);
        return;
      }
      case 'tenant update': {
        allowed('name', 'weight', 'priority', 'rpm', 'tpm');
        const [name] = positionals(1, 'a tenant NAME');
        const changes = dropUndefined({ name: flags.name, weight: weight(), priority: int('priority'), rpm: int('rpm'), tpm: int('tpm') });
        if (Object.keys(changes).length === 0) usageError('admin', 'tenant update: give at least one of --name, --weight, --priority, --rpm, --tpm');
        printTenants([(await call('PATCH', `/admin/tenants/${seg(name!)}`, changes)) as TenantView]);
        return;
      }
      case 'key create': {
        allowed('tenant', 'expires');
        positionals(0, 'no arguments (use --tenant NAME)');
        const tenant = requireTenant();
        const k = (await call('POST', `/admin/tenants/${seg(tenant)}/keys`, dropUndefined({ expiresAt: flags.expires }))) as KeyView & { key: string };
        console.log(`created key ${k.id} (${k.prefix}...) for tenant ${tenant}${k.expiresAt !== null ? `, expires ${k.expiresAt}` : ''}`);
        console.log('the key is shown once and never again:');
        console.log(k.key);
        return;
      }
      case 'key list': {
        allowed('tenant', 'json');
        positionals(0, 'no arguments (use --tenant NAME)');
        const res = (await call('GET', `/admin/tenants/${seg(requireTenant())}/keys`)) as { data: KeyView[] };
        if (flags.json === true) console.log(JSON.stringify(res.data, null, 2));
        else printTable(['ID', 'PREFIX', 'CREATED', 'EXPIRES', 'REVOKED'], res.data.map((k) => [k.id, `${k.prefix}...`, k.createdAt, k.expiresAt ?? '-', k.revokedAt ?? '-']));
        return;
      }
      case 'key revoke': {
        allowed();
        const [id] = positionals(1, 'a key ID');
        const k = (await call('POST', `/admin/keys/${seg(id!)}/revoke`, {})) as KeyView;
        console.log(`revoked key ${k.id} (${k.prefix}...) at ${k.revokedAt}`);
        return;
      }
      case 'quota set': {
        allowed('tenant', 'model', 'key', 'rpm', 'tpm');
        positionals(0, 'no arguments');
        const q = (await call('PUT', '/admin/quotas', dropUndefined({ tenant: requireTenant(), model: flags.model, keyId: flags.key, rpm: int('rpm'), tpm: int('tpm') }))) as {
          scope: string | null; rpm: number | null; tpm: number | null; deleted?: boolean;
        };
        if (q.deleted === true) console.log('quota removed');
        else console.log(`quota (${q.scope}): rpm ${q.rpm ?? 'unlimited'}, tpm ${q.tpm ?? 'unlimited'}`);
        return;
      }
      case 'model register': {
        allowed('all-tenants');
        const [name] = positionals(1, 'a model NAME');
        const m = (await call('PUT', `/admin/models/${seg(name!)}`, { allTenants: flags['all-tenants'] === true })) as { name: string; allTenants: boolean };
        console.log(`model ${m.name}: ${m.allTenants ? 'open to every tenant' : 'only for tenants granted it (model allow)'}`);
        return;
      }
      case 'model allow':
      case 'model disallow': {
        allowed('tenant');
        const [name] = positionals(1, 'a model NAME');
        const tenant = requireTenant();
        await call(action === 'allow' ? 'PUT' : 'DELETE', `/admin/models/${seg(name!)}/tenants/${seg(tenant)}`);
        console.log(`tenant ${tenant} ${action === 'allow' ? 'may now use' : 'may no longer use'} model ${name}`);
        return;
      }
      case 'model unregister': {
        allowed();
        const [name] = positionals(1, 'a model NAME');
        await call('DELETE', `/admin/models/${seg(name!)}`);
        console.log(`model ${name} is open to every tenant again`);
        return;
      }
      case 'model list': {
        allowed('json');
        positionals(0, 'no arguments');
        const res = (await call('GET', '/admin/models')) as { data: { name: string; allTenants: boolean; tenants: string[] }[] };
        if (flags.json === true) console.log(JSON.stringify(res.data, null, 2));
        else printTable(['MODEL', 'ACCESS'], res.data.map((m) => [m.name, m.allTenants ? 'all tenants' : m.tenants.length === 0 ? '(no tenant)' : m.tenants.join(', ')]));
        return;
      }
      case 'adapter register': {
        allowed('base', 'path', 'tenant', 'public', 'rank');
        const [name] = positionals(1, 'an adapter NAME');
        const baseModel = flags.base ?? usageError('admin', 'adapter register: --base MODEL (the base model) is required', help);
        const source = flags.path ?? usageError('admin', 'adapter register: --path PATH (where the engine loads the adapter from) is required', help);
        const isPublic = flags.public === true;
        if (isPublic === (flags.tenant !== undefined)) {
          usageError('admin', 'adapter register: give exactly one of --tenant NAME (the owner) or --public (every tenant may use it)', help);
        }
        let rank: number | undefined;
        if (flags.rank !== undefined) {
          rank = Number(flags.rank);
          if (flags.rank.trim() === '' || !Number.isSafeInteger(rank) || rank < 1) usageError('admin', `--rank ${JSON.stringify(flags.rank)} is not a whole number > 0`);
        }
        const a = (await call('POST', '/admin/adapters', dropUndefined({ name, baseModel, source, rank, tenant: isPublic ? null : flags.tenant }))) as AdapterView;
        printAdapters([a]);
        return;
      }
      case 'adapter list': {
        allowed('json');
        positionals(0, 'no arguments');
        const res = (await call('GET', '/admin/adapters')) as { data: AdapterView[] };
        if (flags.json === true) console.log(JSON.stringify(res.data, null, 2));
        else printAdapters(res.data);
        return;
      }
      case 'adapter remove': {
        allowed();
        const [name] = positionals(1, 'an adapter NAME');
        await call('DELETE', `/admin/adapters/${seg(name!)}`);
        console.log(`adapter ${name} removed`);
        return;
      }
      case 'usage': {
        allowed('tenant', 'since', 'json');
        positionals(0, 'no arguments');
        if (flags.since !== undefined && Number.isNaN(new Date(flags.since).getTime())) usageError('admin', `--since ${JSON.stringify(flags.since)} is not an ISO-8601 time`);
        const qs = new URLSearchParams(dropUndefined({ tenant: flags.tenant, since: flags.since })).toString();
        const res = (await call('GET', `/admin/usage${qs === '' ? '' : `?${qs}`}`)) as { data: UsageView[] };
        if (flags.json === true) console.log(JSON.stringify(res.data, null, 2));
        else {
          printTable(
            ['TENANT', 'MODEL', 'REQUESTS', 'ERRORS', 'PROMPT', 'CACHED', 'COMPLETION'],
            res.data.map((u) => [u.tenant ?? '(none)', u.model, u.requests, u.errors, u.promptTokens, u.cachedTokens, u.completionTokens].map(String)),
          );
        }
        return;
      }
      default:
        usageError('admin', `unknown admin command "${[group, action].filter(Boolean).join(' ')}"`, help);
    }
  } catch (err) {
    if (err instanceof AdminCallError) {
      console.error(`switchyard admin: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}

interface TenantView { name: string; weight: number; priority: number; rpm: number | null; tpm: number | null; id: string }
interface KeyView { id: string; prefix: string; createdAt: string; expiresAt: string | null; revokedAt: string | null }
interface AdapterView {
  name: string; baseModel: string; source: string; rank: number | null; tenant: string | null;
  engines?: { engine: string; state: string; reason?: string }[];
}
interface UsageView {
  tenant: string | null; model: string; requests: number; errors: number; promptTokens: number; cachedTokens: number; completionTokens: number;
}

async function callApi(base: string, adminKey: string, method: string, path: string, body?: unknown): Promise<unknown> {
  let res;
  try {
    res = await request(`${base}${path}`, {
      method: method as 'GET',
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
  } catch (err) {
    throw new AdminCallError(`cannot reach ${base}: ${(err as Error).message}`);
  }
  const text = await res.body.text();
  let json: unknown;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.statusCode >= 400) {
    const message = (json as { error?: { message?: string } } | undefined)?.error?.message ?? text.slice(0, 200);
    const hint = res.statusCode === 404 && path.startsWith('/admin/') && message.startsWith('no route') ? ' (is the admin API enabled? the gateway needs SWITCHYARD_ADMIN_KEY)' : '';
    throw new AdminCallError(`${method} ${path}: ${res.statusCode} ${message}${hint}`);
  }
  if (json === undefined) throw new AdminCallError(`${method} ${path}: the answer is not JSON`);
  return json;
}

function dropUndefined<T extends Record<string, unknown>>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

function printTenants(rows: TenantView[]): void {
  printTable(['NAME', 'WEIGHT', 'PRIORITY', 'RPM', 'TPM', 'ID'], rows.map((t) => [t.name, String(t.weight), String(t.priority), String(t.rpm ?? '-'), String(t.tpm ?? '-'), t.id]));
}

function printAdapters(rows: AdapterView[]): void {
  printTable(
    ['NAME', 'BASE', 'OWNER', 'RANK', 'ENGINES'],
    rows.map((a) => [
      a.name,
      a.baseModel,
      a.tenant ?? '(public)',
      a.rank === null ? '-' : String(a.rank),
      a.engines === undefined || a.engines.length === 0 ? '-' : a.engines.map((e) => `${e.engine}:${e.state}`).join(','),
    ]),
  );
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}
