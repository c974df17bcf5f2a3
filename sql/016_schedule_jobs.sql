-- 016_schedule_jobs: a schedule's template is a notification or a task job (exactly one).
--
-- Design note. `job` holds the checked `{"task", "args", "priority", "max_attempts"}` a schedule
-- enqueues at each occurrence through the task accept path, with the same Idempotency-Key
-- (`schedule:<id>:<occurrence>`) and the same fence and cursor move in the job row's
-- transaction as a notification's (pulse/store/cron_fence.py).

ALTER TABLE schedules ADD COLUMN job jsonb;
ALTER TABLE schedules ALTER COLUMN notification DROP NOT NULL;
ALTER TABLE schedules ADD CONSTRAINT schedules_one_template
    CHECK (num_nonnulls(notification, job) = 1);
