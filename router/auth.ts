import { createHash, timingSafeEqual } from 'node:crypto';
import type { KeyConfig } from '../core/config.js';

/** Who is calling: a config key's principal, or a database key with its tenant. */
export interface Principal {
  readonly id: string;
  /** Set for keys from the control-plane database. */
  readonly tenant?: TenantInfo;
  /** The database key's id (api_keys.id); absent for config keys. */
  readonly keyId?: string;
}

export interface TenantInfo {
  readonly id: string;
  readonly name: string;
  readonly weight: number;
  readonly priority: number;
}

/**
 * The seam between the gateway and wherever keys live: the config file today, the tenant store later.
 * Implementations compare secrets in constant time and never keep a key in clear.
 */
export interface PrincipalResolver {
  resolve(apiKey: string): Promise<Principal | undefined>;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Keys from config: stored as SHA-256 digests; `env` entries are hashed at start-up and the clear key dropped. */
export function configKeyResolver(keys: readonly KeyConfig[], env: NodeJS.ProcessEnv = process.env): PrincipalResolver {
  const entries: { digest: Buffer; principal: Principal }[] = [];
  for (const k of keys) {
    if ('sha256' in k) {
      entries.push({ digest: Buffer.from(k.sha256, 'hex'), principal: { id: k.principal } });
      continue;
    }
    const key = env[k.env];
    if (key === undefined || key === '') throw new Error(`auth key for principal "${k.principal}": env ${k.env} is not set`);
    entries.push({ digest: sha256(key), principal: { id: k.principal } });
  }
  return {
    async resolve(apiKey) {
      const digest = sha256(apiKey);
      // Every entry is compared so the time taken does not depend on which one matches.
      let found: Principal | undefined;
      for (const e of entries) if (timingSafeEqual(e.digest, digest) && found === undefined) found = e.principal;
      return found;
    },
  };
}

/** The key from an `Authorization: Bearer <key>` header, or undefined. */
export function bearerKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** Tries each resolver in turn; the first that knows the key wins. */
export function composeResolvers(...resolvers: readonly PrincipalResolver[]): PrincipalResolver {
  return {
    async resolve(apiKey) {
      for (const r of resolvers) {
        const p = await r.resolve(apiKey);
        if (p !== undefined) return p;
      }
      return undefined;
    },
  };
}
