-- 002_attempts_dead_letters: one row per delivery attempt, and the dead-letter record.
--
-- Design note. An attempt row answers "what happened on try N": when it started, how long the
-- provider took, the outcome, the error's class and message, the provider's answer and which
-- worker made it. Rows are written by the acker in the same statement as the status change.
-- Dead letters are moved atomically inside Redis (lua/dead_letter.lua); this table is their
-- queryable record (filters by tenant, channel, error class, time) and what replay and purge
-- act on. A stream entry that could not be decoded has no notification: it is kept here with
-- its raw bytes, never dropped.

CREATE TABLE attempts (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id    uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    number             integer NOT NULL,
    started_at         timestamptz NOT NULL,
    duration_ms        double precision NOT NULL,
    outcome            text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    error_class        text,
    error_message      text,
    provider_response  text,
    worker             text NOT NULL
);

CREATE INDEX attempts_notification ON attempts (notification_id, id);

CREATE TABLE dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  uuid REFERENCES notifications (id) ON DELETE CASCADE,
    tenant_id        uuid REFERENCES tenants (id) ON DELETE CASCADE,
    channel          text,
    reason           text NOT NULL,
    error_class      text,
    dead_at          timestamptz NOT NULL DEFAULT now(),
    stream           text NOT NULL,
    entry_id         text NOT NULL,
    raw              bytea,
    replayed_at      timestamptz,
    replayed_by      text
);

CREATE INDEX dead_letters_listing ON dead_letters (tenant_id, dead_at) WHERE replayed_at IS NULL;
CREATE UNIQUE INDEX dead_letters_entry ON dead_letters (stream, entry_id);
