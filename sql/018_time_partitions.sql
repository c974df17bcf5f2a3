-- 018_time_partitions: notifications and the rows that hang off them, partitioned by week.
--
-- Design note. Finished work is kept PULSE_RETENTION_DAYS and then removed by dropping a whole
-- partition, not by DELETEing millions of rows (pulse/store/retention.py, run by one worker
-- under a Redis lock). Notification ids are UUIDv7, so their first 48 bits are the creation
-- time: the tables are RANGE-partitioned on the id itself (audit, attempts and job_results on
-- the notification id they hang off), so `id` stays the primary key, foreign keys keep
-- working, lookups by id prune to one partition, and a notification's rows live in partitions
-- of the same week. Weekly rather than daily: the queries that cannot prune by id (a tenant's
-- list, the reconciler, due schedules) probe every partition's index, so ~6 partitions per
-- table instead of ~35 keep them cheap; the price is keeping data up to a week past the
-- retention.
--
-- Partitions are named <table>_wYYYYMMDD after the Monday (UTC) their week starts. Rows that
-- existed before this migration go to <table>_legacy (everything before this week), dropped
-- like any other week once it holds nothing live. A DEFAULT partition catches any row whose
-- week has no partition yet (a worker down for weeks, an id from elsewhere), so no insert can
-- fail; pulse_create_week() skips a week the default already holds rows of, and the batched
-- delete of the maintenance loop cleans what is finished there.
--
-- This migration rewrites the five tables (copy, drop, rename): its time is proportional to
-- their size and it holds their locks meanwhile. Dead letters and job dependencies stay plain
-- tables (few rows; dead letters keep their unique (stream, entry_id), which a partitioned
-- table could only enforce with the partition key in it); the maintenance deletes their rows
-- of a week before dropping it, through the indexes added here.

-- The smallest UUIDv7 made at `at` or later: the bound between two periods.
CREATE FUNCTION pulse_id_bound(at timestamptz) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- Create the partitions of the week starting on `week` (a Monday) for every partitioned table,
-- unless they exist or the default partitions hold rows of that week (the week then stays in
-- the default). Returns how many partitions it created.
CREATE FUNCTION pulse_create_week(week date) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lo uuid := pulse_id_bound(week::timestamp AT TIME ZONE 'UTC');
    hi uuid := pulse_id_bound((week + 7)::timestamp AT TIME ZONE 'UTC');
    suffix text := '_w' || to_char(week, 'YYYYMMDD');
    tables text[] := ARRAY['notifications', 'audit', 'attempts', 'job_results'];
    keys text[] := ARRAY['id', 'notification_id', 'notification_id', 'job_id'];
    busy boolean;
    made integer := 0;
BEGIN
    IF extract(isodow FROM week) <> 1 THEN
        RAISE EXCEPTION 'a week starts on a Monday, not on %', week;
    END IF;
    FOR i IN 1 .. array_length(tables, 1) LOOP
        CONTINUE WHEN to_regclass(tables[i] || suffix) IS NOT NULL;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                       tables[i] || '_default', keys[i], keys[i])
           INTO busy USING lo, hi;
        IF busy THEN
            RAISE WARNING 'week % stays in %_default: it holds rows of it', week, tables[i];
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       tables[i] || suffix, tables[i], lo, hi);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- The old tables step aside (with their identity sequences, so the new ones take the names).
ALTER TABLE notifications RENAME TO notifications_old;
ALTER TABLE audit RENAME TO audit_old;
ALTER TABLE attempts RENAME TO attempts_old;
ALTER TABLE job_results RENAME TO job_results_old;
ALTER SEQUENCE audit_id_seq RENAME TO audit_old_id_seq;
ALTER SEQUENCE attempts_id_seq RENAME TO attempts_old_id_seq;

-- The new tables: the same columns, defaults, CHECKs and identities, partitioned.
CREATE TABLE notifications
    (LIKE notifications_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    PARTITION BY RANGE (id);
CREATE TABLE audit
    (LIKE audit_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    PARTITION BY RANGE (notification_id);
CREATE TABLE attempts
    (LIKE attempts_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    PARTITION BY RANGE (notification_id);
CREATE TABLE job_results
    (LIKE job_results_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    PARTITION BY RANGE (job_id);

-- Everything before this week goes to _legacy; this week and the next four get their own, as
-- the maintenance loop keeps doing; the default catches the rest.
DO $$
DECLARE
    t text;
    this_week date := date_trunc('week', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOREACH t IN ARRAY ARRAY['notifications', 'audit', 'attempts', 'job_results'] LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       t || '_legacy', t,
                       pulse_id_bound(this_week::timestamp AT TIME ZONE 'UTC'));
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
    END LOOP;
    FOR w IN 0 .. 4 LOOP
        PERFORM pulse_create_week(this_week + 7 * w);
    END LOOP;
END
$$;

INSERT INTO notifications SELECT * FROM notifications_old;
INSERT INTO audit OVERRIDING SYSTEM VALUE SELECT * FROM audit_old;
INSERT INTO attempts OVERRIDING SYSTEM VALUE SELECT * FROM attempts_old;
INSERT INTO job_results SELECT * FROM job_results_old;

-- The identities go on from where the old ones were.
SELECT setval('audit_id_seq', (SELECT last_value FROM audit_old_id_seq),
              (SELECT is_called FROM audit_old_id_seq));
SELECT setval('attempts_id_seq', (SELECT last_value FROM attempts_old_id_seq),
              (SELECT is_called FROM attempts_old_id_seq));

-- Dropping the old tables drops their indexes, triggers and the foreign keys that point at them
-- (dead_letters, job_dependencies): all recreated below under their old names.
DROP TABLE job_results_old, attempts_old, audit_old, notifications_old CASCADE;

ALTER TABLE notifications ADD CONSTRAINT notifications_pkey PRIMARY KEY (id);
ALTER TABLE notifications ADD CONSTRAINT notifications_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id);
ALTER TABLE notifications ADD CONSTRAINT notifications_receipt_for_fkey
    FOREIGN KEY (receipt_for) REFERENCES notifications (id) ON DELETE CASCADE;
CREATE INDEX notifications_tenant_id ON notifications (tenant_id, id);
CREATE INDEX notifications_open ON notifications (updated_at)
    WHERE status IN ('queued', 'delivering', 'retrying');
CREATE INDEX notifications_metadata ON notifications USING gin (metadata jsonb_path_ops);
CREATE INDEX notifications_tenant_status ON notifications (tenant_id, status, id);
CREATE INDEX notifications_receipt_for ON notifications (receipt_for) WHERE receipt_for IS NOT NULL;
CREATE INDEX notifications_scheduled ON notifications (send_at, id) WHERE status = 'scheduled';
CREATE INDEX notifications_tasks ON notifications (tenant_id, id) WHERE channel LIKE 'task:%';
-- What the maintenance asks of a week before dropping it: anything unfinished (a tiny index:
-- only live rows), anything updated since the cutoff (BRIN: a few pages, updates near insert).
CREATE INDEX notifications_unfinished ON notifications (id)
    WHERE status NOT IN ('delivered', 'failed', 'cancelled', 'skipped');
CREATE INDEX notifications_updated_brin ON notifications USING brin (updated_at);

ALTER TABLE audit ADD CONSTRAINT audit_pkey PRIMARY KEY (notification_id, id);
ALTER TABLE audit ADD CONSTRAINT audit_notification_id_fkey
    FOREIGN KEY (notification_id) REFERENCES notifications (id) ON DELETE CASCADE;
-- The primary key (notification_id, id) is the old audit_notification index.
CREATE UNIQUE INDEX audit_due_once ON audit (notification_id) WHERE detail = 'due';

ALTER TABLE attempts ADD CONSTRAINT attempts_pkey PRIMARY KEY (notification_id, id);
ALTER TABLE attempts ADD CONSTRAINT attempts_notification_id_fkey
    FOREIGN KEY (notification_id) REFERENCES notifications (id) ON DELETE CASCADE;

ALTER TABLE job_results ADD CONSTRAINT job_results_pkey PRIMARY KEY (job_id);
ALTER TABLE job_results ADD CONSTRAINT job_results_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES notifications (id) ON DELETE CASCADE;
ALTER TABLE job_results ADD CONSTRAINT job_results_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;
CREATE INDEX job_results_expiry ON job_results (expires_at) WHERE expires_at IS NOT NULL;

ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_notification_id_fkey
    FOREIGN KEY (notification_id) REFERENCES notifications (id) ON DELETE CASCADE;
CREATE INDEX dead_letters_notification ON dead_letters (notification_id)
    WHERE notification_id IS NOT NULL;
ALTER TABLE job_dependencies ADD CONSTRAINT job_dependencies_child_id_fkey
    FOREIGN KEY (child_id) REFERENCES notifications (id) ON DELETE CASCADE;
ALTER TABLE job_dependencies ADD CONSTRAINT job_dependencies_parent_id_fkey
    FOREIGN KEY (parent_id) REFERENCES notifications (id) ON DELETE CASCADE;

CREATE TRIGGER notifications_task_done
    AFTER UPDATE OF status ON notifications
    FOR EACH ROW
    WHEN (NEW.status IN ('delivered', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.channel LIKE 'task:%')
    EXECUTE FUNCTION pulse_job_done();

CREATE TRIGGER notifications_release_children
    AFTER UPDATE OF status ON notifications
    FOR EACH ROW
    WHEN (NEW.status IN ('delivered', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.channel LIKE 'task:%')
    EXECUTE FUNCTION pulse_release_children();

ANALYZE notifications, audit, attempts, job_results;
