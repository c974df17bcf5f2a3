-- 011_tenant_limits: a tenant's ingress rate limits, set by an operator.
--
-- Design note. The limiter itself lives in Redis (gcra.lua: one theoretical arrival time per
-- tenant and per API key); this table only says what each tenant's limits are, so they survive
-- a Redis restart and every API process reads the same ones. A NULL column means "the
-- deployment's default" (PULSE_RATE_LIMIT_PER_S and friends), so changing a default reaches
-- every tenant without an override; a rate of 0 turns that limit off for the tenant. A burst is
-- how many units (notifications: a batch counts its items) may arrive at once.

CREATE TABLE tenant_limits (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    rate_per_s      double precision CHECK (rate_per_s >= 0),
    burst           integer CHECK (burst >= 1),
    key_rate_per_s  double precision CHECK (key_rate_per_s >= 0),
    key_burst       integer CHECK (key_burst >= 1),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
