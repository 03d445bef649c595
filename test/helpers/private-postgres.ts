import { execFile, execFileSync } from 'node:child_process';
import { chown, mkdtemp, rm, appendFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/**
 * A throwaway Postgres cluster of its own, for tests that stop and restart Postgres without disturbing the shared
 * server other test files use. Built from the machine's Postgres binaries (/usr/lib/postgresql/<version>/bin):
 * trust auth, 127.0.0.1 on a free port, its Unix socket in its own temp dir, durability off (fsync) for speed.
 * As root, the binaries run as the `postgres` OS user (initdb refuses root).
 */

const run = promisify(execFile);
const PG_ROOT = '/usr/lib/postgresql';

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  /** pg_ctl stop -m fast: clients get their connections cut, new ones are refused. */
  stop(): Promise<void>;
  /** Starts it again, on the same port. */
  start(): Promise<void>;
  /** Stops it (immediately) and deletes its files. */
  destroy(): Promise<void>;
}

const isRoot = process.getuid?.() === 0;

function binDir(): string | undefined {
  if (!existsSync(PG_ROOT)) return undefined;
  // The newest installed major version with the server binaries.
  const versions = readdirSync(PG_ROOT).filter((v) => existsSync(join(PG_ROOT, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? undefined : join(PG_ROOT, versions[0]!, 'bin');
}

function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    return { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) };
  } catch {
    return undefined;
  }
}

const BIN = binDir();
const PG_USER = isRoot ? postgresUser() : undefined;

/** Whether startPrivatePostgres can work here: Postgres binaries installed, and a `postgres` user when running as root. */
export const privatePostgresAvailable: boolean = BIN !== undefined && (!isRoot || PG_USER !== undefined);

// Clusters still running when the process exits (a test that crashed before destroy()) are stopped on the way out.
const live = new Set<string>();
let exitHookInstalled = false;

/** The command line for a Postgres binary, as the `postgres` user when we are root. */
function command(bin: string, args: string[]): [string, string[]] {
  const path = join(BIN!, bin);
  return isRoot ? ['runuser', ['-u', 'postgres', '--', path, ...args]] : [path, args];
}

async function pg(bin: string, args: string[]): Promise<void> {
  const [file, argv] = command(bin, args);
  try {
    await run(file, argv, { timeout: 60_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`${bin} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`, { cause: err });
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  return address.port;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  if (!privatePostgresAvailable) throw new Error('private Postgres is not available here (no /usr/lib/postgresql/<version>/bin, or no postgres user)');
  const dir = await mkdtemp(join(tmpdir(), 'sy-pg-'));
  if (PG_USER !== undefined) await chown(dir, PG_USER.uid, PG_USER.gid);
  const data = join(dir, 'data');
  const log = join(dir, 'postgres.log');
  const port = await freePort();
  try {
    await pg('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    // Appending keeps the file's owner (postgres) even when written as root.
    await appendFile(join(data, 'postgresql.conf'), [
      '',
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${dir}'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'max_connections = 50',
      'shared_buffers = 16MB',
      '',
    ].join('\n'));
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  let running = false;
  const start = async (): Promise<void> => {
    if (running) return;
    await pg('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', 'start']);
    running = true;
    live.add(data);
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast'): Promise<void> => {
    if (!running) return;
    await pg('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
    running = false;
    live.delete(data);
  };

  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const d of live) {
        const [file, argv] = command('pg_ctl', ['-D', d, '-m', 'immediate', '-w', 'stop']);
        try {
          execFileSync(file, argv, { stdio: 'ignore', timeout: 10_000 });
        } catch {
          // best effort on the way out
        }
      }
    });
  }

  try {
    await start();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => stop('fast'),
    start,
    destroy: async () => {
      try {
        await stop('immediate');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
