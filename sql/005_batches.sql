-- 005_batches: fan-out requests, accepted whole and expanded by workers.
--
-- Design note. POST /api/notifications/batch validates every item on its own, assigns each
-- valid one its notification id, and commits the batch as one row: accepted means durable, and
-- the request stays fast however many recipients it names. A worker expands the row into
-- notifications (INSERT ... ON CONFLICT DO NOTHING, so a second expansion adds nothing) and
-- streams them. A batch committed but never expanded (its fan-out job lost) is found by the
-- reconciler like any unfinished notification.

CREATE TABLE batches (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    items        jsonb NOT NULL,
    priority     smallint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expanded_at  timestamptz
);

CREATE INDEX batches_unexpanded ON batches (created_at) WHERE expanded_at IS NULL;
