import { LRUCache } from 'lru-cache';
import type { Config } from '../core/config.js';

/**
 * Which engine served each session last, so the session scorer can send the next turn back to it. A hint, not
 * state another replica needs: a replica that never saw the session still finds its prefix in the shared index.
 */
export class SessionAffinity {
  readonly #engines: LRUCache<string, string>;
  readonly #config: Config['session'];

  constructor(config: Config['session']) {
    this.#config = config;
    this.#engines = new LRUCache({ max: config.maxSessions, ttl: config.ttlMs, updateAgeOnGet: false });
  }

  /** The request's session key: the configured header, else the OpenAI `user` field when enabled. */
  keyOf(headers: Readonly<Record<string, string | string[] | undefined>>, body: { user?: unknown }): string | undefined {
    const header = headers[this.#config.header];
    if (typeof header === 'string' && header !== '') return header;
    if (this.#config.userField && typeof body.user === 'string' && body.user !== '') return body.user;
    return undefined;
  }

  engineOf(key: string | undefined): string | undefined {
    return key === undefined ? undefined : this.#engines.get(key);
  }

  served(key: string | undefined, engineId: string): void {
    if (key !== undefined) this.#engines.set(key, engineId);
  }
}
