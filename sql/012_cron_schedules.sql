-- 012_cron_schedules: cron schedules, and the fence that keeps a deposed cron leader from firing.
--
-- Design note. A schedule creates its notification at each occurrence of a cron expression in
-- an IANA zone. `cursor_at` is the last occurrence handled (fired or skipped as a misfire);
-- `next_fire_at` the next one (NULL once `ends_at` is passed), kept by whoever moves the
-- cursor, so the scheduler's query is one index range. Each occurrence's notification is
-- created through the accept service with the Idempotency-Key `schedule:<id>:<occurrence>`,
-- and the transaction that commits it also moves the cursor past the occurrence (requiring
-- the `version` the fire was planned with, so an edit or a pause in between creates nothing).
--
-- `deployment` is the Redis key prefix of the Pulse that owns the schedule: the scheduler of
-- one prefix (its lock, its streams) fires only its own schedules, as its reconciler does.
--
-- `cron_fences`: one row per deployment; each new cron leader increments `token` when it takes
-- over. The statement that commits an occurrence's notification first locks this row (FOR
-- SHARE) and requires the leader's own token, so a leader paused past its Redis lock's expiry
-- cannot commit anything once its successor took over: the successor's increment waits for
-- any fire in progress, and every fire after it finds a newer token.

CREATE TABLE schedules (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    deployment      text NOT NULL,
    cron            text NOT NULL,
    timezone        text NOT NULL,
    notification    jsonb NOT NULL,
    starts_at       timestamptz,
    ends_at         timestamptz,
    misfire         text NOT NULL CHECK (misfire IN ('skip', 'catch_up')),
    catch_up_limit  integer NOT NULL CHECK (catch_up_limit BETWEEN 1 AND 1000),
    paused          boolean NOT NULL DEFAULT false,
    cursor_at       timestamptz NOT NULL,
    next_fire_at    timestamptz,
    last_fired_at   timestamptz,
    fired           bigint NOT NULL DEFAULT 0,
    skipped         bigint NOT NULL DEFAULT 0,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_tenant ON schedules (tenant_id, id);
CREATE INDEX schedules_due ON schedules (deployment, next_fire_at) WHERE NOT paused;

CREATE TABLE cron_fences (
    deployment  text PRIMARY KEY,
    token       bigint NOT NULL,
    holder      text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);
