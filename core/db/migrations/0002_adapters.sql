-- LoRA adapters: the registry. Which engines hold an adapter is not stored here: that is shared state the
-- adapters controller keeps (core/state/), since it changes with every load and unload.

CREATE TABLE adapters (
  -- The name clients send as "model" and the engine's lora_name.
  name        text PRIMARY KEY CHECK (name <> ''),
  -- The model the adapter was trained on; only engines serving it can load it.
  base_model  text NOT NULL CHECK (base_model <> ''),
  -- Path or URI handed to the engine as lora_path.
  source      text NOT NULL CHECK (source <> ''),
  -- LoRA rank, when known (engines bound the rank they accept).
  rank        integer CHECK (rank > 0),
  -- The owning tenant; NULL: a public adapter, usable by every tenant.
  tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adapters_tenant_idx ON adapters (tenant_id);
