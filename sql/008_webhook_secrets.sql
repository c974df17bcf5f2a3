-- 008_webhook_secrets: each tenant signs its webhooks with its own secret.
--
-- Design note. Until now one deployment-wide PULSE_WEBHOOK_SECRET signed every tenant's
-- webhooks (and an unset one signed with an empty key), so any tenant could forge webhooks to
-- another's endpoint. A tenant's webhook secret is now derived, like its receipt secret, from
-- PULSE_RECEIPT_SIGNING_KEY, the tenant and `generation` (under a label of its own, so the two
-- secrets differ): nothing secret is stored here. A tenant without a row is at generation 1;
-- rotating bumps the generation, and the previous secret keeps signing for 24 hours after
-- `rotated_at` (Standard Webhooks allows several signatures per delivery).

CREATE TABLE webhook_secrets (
    tenant_id    uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    generation   integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    rotated_at   timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
