-- 014_task_flows: chains and groups of tasks (a job that starts when its parents succeed).
--
-- Design note. A job enqueued with `after` is committed `waiting`, with one `job_dependencies`
-- row per parent not yet succeeded. The release happens in the transaction that records a
-- parent's end (the trigger below), so it happens exactly once whatever happens to the worker
-- afterwards: a parent that succeeded removes its rows, and the child whose last row went is
-- moved to `queued` (audited) and announced on `pulse_job_released`, on which workers stream
-- it; should that announcement be lost (a worker SIGKILLed after the commit), the child is an
-- ordinary queued row that the reconciler streams. A parent that fails or is cancelled cancels
-- its waiting children with the reason, audited, and their own children in turn (the update
-- fires this trigger again). A group callback (payload key `group`, the member ids in order)
-- gets the members' results as its `results` argument when released. Releases take one
-- transaction-scoped advisory lock so two parents of one child ending at once in two
-- transactions cannot each see the other still running; only the ends of jobs that have
-- children take it.

ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN (
    'scheduled', 'waiting', 'queued', 'delivering', 'retrying',
    'delivered', 'failed', 'cancelled', 'skipped'));

CREATE TABLE job_dependencies (
    child_id   uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    parent_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    PRIMARY KEY (child_id, parent_id)
);

CREATE INDEX job_dependencies_parent ON job_dependencies (parent_id);

CREATE FUNCTION pulse_release_children() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    child uuid;
    reason text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job_dependencies WHERE parent_id = NEW.id) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(7075736502);  -- "pulse" + 2: releases, one at a time
    IF NEW.status <> 'delivered' THEN
        reason := format('parent %s %s', NEW.id,
                         CASE NEW.status WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END);
        FOR child IN
            DELETE FROM job_dependencies WHERE parent_id = NEW.id RETURNING child_id
        LOOP
            UPDATE notifications SET status = 'cancelled', last_error = reason, updated_at = now()
             WHERE id = child AND status = 'waiting';
            IF FOUND THEN
                INSERT INTO audit (notification_id, status, detail) VALUES (child, 'cancelled', reason);
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    FOR child IN
        DELETE FROM job_dependencies WHERE parent_id = NEW.id RETURNING child_id
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM job_dependencies WHERE child_id = child);
        UPDATE notifications n
           SET status = 'queued', updated_at = now(),
               payload = CASE WHEN n.payload ? 'group' THEN jsonb_set(
                   n.payload, '{args,results}',
                   (SELECT coalesce(jsonb_agg(r.result ORDER BY m.ord), '[]'::jsonb)
                      FROM jsonb_array_elements_text(n.payload -> 'group')
                           WITH ORDINALITY AS m(id, ord)
                      LEFT JOIN job_results r ON r.job_id = m.id::uuid))
               ELSE n.payload END
         WHERE id = child AND status = 'waiting';
        IF FOUND THEN
            INSERT INTO audit (notification_id, status, detail)
            VALUES (child, 'queued', 'released: every parent succeeded');
            PERFORM pg_notify('pulse_job_released', child::text);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_release_children
    AFTER UPDATE OF status ON notifications
    FOR EACH ROW
    WHEN (NEW.status IN ('delivered', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.channel LIKE 'task:%')
    EXECUTE FUNCTION pulse_release_children();
