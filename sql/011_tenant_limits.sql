-- 011_tenant_limits: a tenant's ingress rate limits (set by an operator) and recipient caps.
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

-- Recipient caps: at most `max_count` deliveries to one recipient of a channel per `window_s`,
-- per tenant and channel, set by the tenant's admins. Over the cap a notification waits until
-- the window allows (`over` = 'defer') or ends `skipped` with the reason ('skip'): a final
-- status of its own (neither delivered nor failed: nothing went wrong), audited and reported
-- in receipts like the others. The counting itself is in Redis (recipient_cap.lua).
CREATE TABLE recipient_caps (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    max_count   integer NOT NULL CHECK (max_count >= 1),
    window_s    integer NOT NULL CHECK (window_s >= 1),
    over        text NOT NULL CHECK (over IN ('defer', 'skip')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel)
);

ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN (
    'scheduled', 'queued', 'delivering', 'retrying', 'delivered', 'failed', 'cancelled',
    'skipped'));
ALTER TABLE receipt_endpoints DROP CONSTRAINT receipt_endpoints_events_check;
ALTER TABLE receipt_endpoints ADD CONSTRAINT receipt_endpoints_events_check
    CHECK (events <@ ARRAY['delivered', 'failed', 'skipped']::text[]);
