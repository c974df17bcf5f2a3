-- 003_idempotency_metadata: Idempotency-Key records, and user metadata on notifications.
--
-- Design note. An idempotency record is scoped to its tenant and holds a fingerprint of the
-- request, so the same key with another body is refused. It is claimed in its own short
-- transaction ('in_flight', so a concurrent twin gets 409 instead of waiting) and completed
-- in the same transaction as the notification it created, with the response to replay.
-- A claim left 'in_flight' by a crashed process can be taken over once it is stale. Records
-- expire after the configured retention and are deleted by the API's cleanup loop.
-- Metadata is the client's own key-value pairs, filterable with a GIN index (jsonb @>).

CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key              text NOT NULL,
    fingerprint      bytea NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_flight', 'done')),
    locked_at        timestamptz NOT NULL DEFAULT now(),
    response_status  smallint,
    response_body    bytea,
    response_location text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

ALTER TABLE notifications ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX notifications_metadata ON notifications USING gin (metadata jsonb_path_ops);
CREATE INDEX notifications_tenant_status ON notifications (tenant_id, status, id);
