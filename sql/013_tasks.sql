-- 013_tasks: user task functions: their results, the registry workers publish, and a
-- notification when a task ends.
--
-- Design note. A task is a job whose handler is a user function: its row lives in
-- `notifications` (channel `task:<name>`, payload `{"args": ..., "key": ...}`), so claiming,
-- leases, retries, audit, dead letters, replay and the reconciler are the notifications' own.
-- What only tasks have lives here: `job_results` holds progress, the result (JSON) or the error
-- (type, message, traceback) and timings, one row per job, written by the worker that runs it;
-- `expires_at` is when the maintenance loop deletes it (PULSE_RESULT_RETENTION_S, or the task's
-- keep_result_s). `task_registry` is what workers serve: a task's argument schema (JSON Schema
-- built from the function's signature) and defaults, so the API validates arguments at accept
-- time. A trigger NOTIFYs `pulse_job_done` with the job id when a task's row reaches an end,
-- on commit, so `GET /api/jobs/{id}?wait=` waits without polling; the WHEN clause keeps
-- notifications' updates free of it.

CREATE TABLE job_results (
    job_id         uuid PRIMARY KEY REFERENCES notifications (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    progress       double precision,
    note           text,
    result         jsonb,
    error_type     text,
    error_message  text,
    traceback      text,
    attempt        integer,
    started_at     timestamptz,
    finished_at    timestamptz,
    expires_at     timestamptz
);

CREATE INDEX job_results_expiry ON job_results (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE task_registry (
    name          text PRIMARY KEY,
    schema        jsonb NOT NULL,
    priority      smallint NOT NULL,
    max_attempts  smallint NOT NULL,
    worker        text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Listing a tenant's tasks apart from its notifications.
CREATE INDEX notifications_tasks ON notifications (tenant_id, id) WHERE channel LIKE 'task:%';

CREATE FUNCTION pulse_job_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pulse_job_done', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_task_done
    AFTER UPDATE OF status ON notifications
    FOR EACH ROW
    WHEN (NEW.status IN ('delivered', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.channel LIKE 'task:%')
    EXECUTE FUNCTION pulse_job_done();
