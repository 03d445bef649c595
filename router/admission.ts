import type { FastifyReply } from 'fastify';
import type { Config } from '../core/config.js';
import { ApiError } from '../core/errors.js';
import { RateLimitUnavailableError, type LimitStatus, type RateLimiter, type Reservation, type ReserveResult } from '../core/state/rate-limit.js';
import type { Principal } from './auth.js';
import type { GatewayMetrics } from './metrics.js';
import type { TenantPolicyCache } from './tenant-policy.js';

/**
 * Admission of one inference request for its tenant: the model must be one the tenant may use, and the request
 * must fit every RPM/TPM limit that applies, reserved in one step. The reservation is corrected to the real
 * usage when the answer ends (settleTokens).
 */
export interface AdmissionDeps {
  /** Absent without a control-plane database: config keys only, no tenants, no limits. */
  readonly policies: TenantPolicyCache | undefined;
  readonly limiter: RateLimiter | undefined;
  readonly limits: Config['limits'];
  readonly metrics: GatewayMetrics;
}

export interface Admission {
  /** Prompt tokens estimated from the body's size, before any tokenizer runs. */
  readonly promptEstimate: number;
  readonly reservation: Reservation | undefined;
}

/** Bytes of request body per prompt token, rounded down so the estimate errs high: the real count corrects it. */
const bytesPerToken = 4;

export async function admit(
  principal: Principal,
  model: string,
  body: { max_tokens?: unknown; max_completion_tokens?: unknown; n?: unknown },
  bodyBytes: number,
  completes: boolean,
  reply: FastifyReply,
  deps: AdmissionDeps,
): Promise<Admission> {
  const promptEstimate = Math.ceil(bodyBytes / bytesPerToken);
  const tenant = principal.tenant;
  if (tenant === undefined || deps.policies === undefined) return { promptEstimate, reservation: undefined };
  let policy;
  try {
    policy = await deps.policies.get(tenant.id);
  } catch (err) {
    throw new ApiError(503, 'the control-plane database is unavailable; retry shortly', { code: 'control_plane_unavailable', cause: err });
  }
  if (policy.deniedModels.has(model)) throw modelNotFound(model);
  const rules = policy.rulesFor(model, principal.keyId);
  if (rules.length === 0 || deps.limiter === undefined) return { promptEstimate, reservation: undefined };

  const tokens = promptEstimate + (completes ? maxCompletionTokens(body, deps.limits.defaultMaxTokens) : 0);
  let result: ReserveResult;
  try {
    result = await deps.limiter.reserve({ tenantId: tenant.id, rules, tokens });
  } catch (err) {
    if (err instanceof RateLimitUnavailableError) {
      throw new ApiError(503, 'the rate-limit store is unavailable; retry shortly', { code: 'rate_limit_unavailable', headers: { 'retry-after': '1' } });
    }
    throw err;
  }
  const headers = rateLimitHeaders(result.requests, result.tokens);
  if (!result.allowed) {
    deps.metrics.rateLimited.inc({ kind: result.kind });
    const wait = result.tooLarge ? '' : ` Please try again in ${formatDuration(result.retryAfterMs)}.`;
    if (!result.tooLarge) {
      headers['retry-after'] = String(Math.max(1, Math.ceil(result.retryAfterMs / 1000)));
      headers['retry-after-ms'] = String(Math.ceil(result.retryAfterMs));
    }
    const what = result.kind === 'requests' ? 'requests per minute (RPM)' : 'tokens per minute (TPM)';
    const status = result.kind === 'requests' ? result.requests : result.tokens;
    const message = result.tooLarge
      ? `Request too large for tenant ${tenant.name} (${result.scope}) on ${what}: limit ${status?.limit ?? '?'}, requested ${tokens} (prompt estimate plus max_tokens). Lower max_tokens or the prompt.`
      : `Rate limit reached for tenant ${tenant.name} (${result.scope}) on ${what}: limit ${status?.limit ?? '?'}, remaining ${status?.remaining ?? 0}.${wait}`;
    throw new ApiError(429, message, { type: result.kind, code: result.tooLarge ? 'request_too_large' : 'rate_limit_exceeded', headers });
  }
  for (const name in headers) reply.header(name, headers[name]);
  return { promptEstimate, reservation: result.reservation };
}

/** The most the answer may use: max_tokens (or max_completion_tokens), else the configured default, times n. */
function maxCompletionTokens(body: { max_tokens?: unknown; max_completion_tokens?: unknown; n?: unknown }, fallback: number): number {
  const max = positiveInt(body.max_completion_tokens) ?? positiveInt(body.max_tokens) ?? fallback;
  return max * (positiveInt(body.n) ?? 1);
}

function positiveInt(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined;
}

/** OpenAI's rate-limit headers, from the tightest scope of each kind. */
export function rateLimitHeaders(requests: LimitStatus | undefined, tokens: LimitStatus | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  if (requests !== undefined) {
    headers['x-ratelimit-limit-requests'] = String(requests.limit);
    headers['x-ratelimit-remaining-requests'] = String(requests.remaining);
    headers['x-ratelimit-reset-requests'] = formatDuration(requests.resetMs);
  }
  if (tokens !== undefined) {
    headers['x-ratelimit-limit-tokens'] = String(tokens.limit);
    headers['x-ratelimit-remaining-tokens'] = String(tokens.remaining);
    headers['x-ratelimit-reset-tokens'] = formatDuration(tokens.resetMs);
  }
  return headers;
}

/** OpenAI's duration format: "20ms", "1.5s", "6m0s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(3))}s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes}m${Number(((ms - minutes * 60_000) / 1000).toFixed(3))}s`;
}

export function modelNotFound(model: string): ApiError {
  return new ApiError(404, `The model \`${model}\` does not exist or you do not have access to it.`, { code: 'model_not_found', param: 'model' });
}
