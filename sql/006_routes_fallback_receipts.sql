-- 006_routes_fallback_receipts: provider routes, fallback chains and delivery receipts.
--
-- Design note. A route lists, per tenant and channel, the providers to try in order (names of
-- providers configured in the environment: credentials never live here). Workers load the
-- whole table every few seconds, so a route change reaches queued work without a restart.
--
-- A notification may carry a fallback chain: further (channel, recipient, payload) steps taken
-- when the current one fails for good. `step` says which one is in force: 0 is the
-- notification's own channel, k is fallback[k-1]. The stream entry carries its step too, so an
-- entry left over from an earlier step is recognised and acknowledged without sending.
--
-- Every attempt row names the channel and provider it went to: one attempt may try several
-- providers (failover), each its own row with the same number. `provider` on the notification
-- is the one that delivered it.
--
-- A tenant's receipt endpoint receives a signed event when one of its notifications is
-- delivered or fails for good. Each receipt is itself a notification (channel 'receipt',
-- receipt_for = the notification), created in the same transaction as the final status, so it
-- is queued, retried and dead-lettered like any other and never lost. The signing secret is
-- derived from PULSE_RECEIPT_SIGNING_KEY, the tenant and `generation` (bumped on rotation), so
-- no secret is stored here.

CREATE TABLE routes (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    providers   text[] NOT NULL CHECK (cardinality(providers) >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel)
);

ALTER TABLE notifications ADD COLUMN fallback jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE notifications ADD COLUMN step smallint NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN provider text;
ALTER TABLE notifications ADD COLUMN receipt_for uuid REFERENCES notifications (id) ON DELETE CASCADE;
CREATE INDEX notifications_receipt_for ON notifications (receipt_for) WHERE receipt_for IS NOT NULL;

ALTER TABLE attempts ADD COLUMN channel text;
ALTER TABLE attempts ADD COLUMN provider text;

CREATE TABLE receipt_endpoints (
    tenant_id    uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    url          text NOT NULL,
    events       text[] NOT NULL CHECK (events <@ ARRAY['delivered', 'failed']::text[]),
    generation   integer NOT NULL DEFAULT 1,
    rotated_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
