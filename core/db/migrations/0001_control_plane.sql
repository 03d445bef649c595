-- Control plane: tenants, API keys (hashed), quotas, models and who may use them, usage records.
-- Runs on Postgres 15+ and PGlite (Postgres 17) alike.

CREATE TABLE tenants (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL UNIQUE CHECK (name <> ''),
  -- Share of service under saturation (VTC weight).
  weight      double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
  -- Priority class: a higher class is served before any lower one under saturation.
  priority    integer NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  -- Lower-case hex SHA-256 of the clear key; the clear key itself is never stored.
  digest      text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
  -- A few leading characters, so people can tell their keys apart in listings.
  prefix      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz,
  revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- One row per limit scope: tenant-wide (model and key NULL), per model, per key, or per key and model.
CREATE TABLE quotas (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  model       text,
  api_key_id  uuid REFERENCES api_keys (id) ON DELETE CASCADE,
  rpm         integer CHECK (rpm >= 0),
  tpm         bigint CHECK (tpm >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT quotas_scope_key UNIQUE NULLS NOT DISTINCT (tenant_id, model, api_key_id)
);

CREATE TABLE models (
  name         text PRIMARY KEY CHECK (name <> ''),
  -- true: every tenant may use it; false: only the tenants listed in model_access.
  all_tenants  boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_access (
  model      text NOT NULL REFERENCES models (name) ON DELETE CASCADE ON UPDATE CASCADE,
  tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  PRIMARY KEY (tenant_id, model)
);

-- One row per finished request, success or failure. Tenant and key are NULL when the request never
-- authenticated; no foreign key on model, since requests for unknown models are recorded too.
CREATE TABLE usage (
  id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  request_id         text NOT NULL UNIQUE,
  tenant_id          uuid REFERENCES tenants (id) ON DELETE SET NULL,
  api_key_id         uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  model              text NOT NULL,
  adapter            text,
  engine             text,
  prompt_tokens      integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
  cached_tokens      integer NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
  completion_tokens  integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
  status             integer NOT NULL,
  ttft_ms            double precision,
  latency_ms         double precision,
  at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_tenant_at_idx ON usage (tenant_id, at);
CREATE INDEX usage_at_idx ON usage (at);
