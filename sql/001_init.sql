-- 001_init: tenants, API keys, notifications and their audit trail.
--
-- Design note. PostgreSQL is the system of record: a notification is accepted only once its row
-- and its first audit row are committed (one statement, so one transaction). Redis holds only
-- the work to do; anything in Redis can be rebuilt from here. API keys are stored as SHA-256
-- digests: keys are 256-bit random tokens, so a fast digest is enough and lookups stay indexed.
-- Status is text with a CHECK rather than an enum type so that adding a status is a plain
-- migration. Audit rows are append-only and ordered by their identity column.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash    bytea NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE notifications (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    channel       text NOT NULL,
    recipient     text NOT NULL,
    payload       jsonb NOT NULL,
    priority      smallint NOT NULL,
    status        text NOT NULL CHECK (status IN (
                      'scheduled', 'queued', 'delivering', 'retrying',
                      'delivered', 'failed', 'cancelled')),
    max_attempts  smallint NOT NULL CHECK (max_attempts >= 1),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    failed_at     timestamptz
);

CREATE INDEX notifications_tenant_id ON notifications (tenant_id, id);
-- The reconciler looks for work that is not finished yet.
CREATE INDEX notifications_open ON notifications (updated_at)
    WHERE status IN ('queued', 'delivering', 'retrying');

CREATE TABLE audit (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    status           text NOT NULL,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker           text,
    detail           text
);

CREATE INDEX audit_notification ON audit (notification_id, id);
