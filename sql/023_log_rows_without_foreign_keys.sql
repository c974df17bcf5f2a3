-- 023_log_rows_without_foreign_keys: audit and attempts rows no longer check a foreign key on
-- insert; deleting a notification still deletes them, through one statement-level trigger.
--
-- Design note. Audit and attempt rows are only ever written by statements that take their
-- notification ids from the notifications rows the same statement changed (RETURNING of the
-- claim, the record, the accept), so an orphan can only come from a race with a DELETE of its
-- notification, and is never read (every read of them goes through a notification of the
-- caller's tenant, and ids are never reused); but the foreign key's check
-- still ran once per row, a lookup through the partitioned notifications table: a quarter of
-- the worker's claim and record statements (two audit rows and an attempt row per delivery).
-- Deletes are rare (a withdrawn accept, retention's batched delete of weeks that stay; whole
-- weeks are dropped as partitions, which fires nothing), so the cascade moves to a trigger that
-- runs once per DELETE statement, over the deleted rows as a transition table. A DELETE aimed
-- at one partition directly would bypass it: Pulse deletes through `notifications` only.
-- job_results, dead_letters and job_dependencies keep their foreign keys (few rows).

ALTER TABLE audit DROP CONSTRAINT audit_notification_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_notification_id_fkey;

CREATE FUNCTION pulse_delete_log_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM audit WHERE notification_id IN (SELECT id FROM gone);
    DELETE FROM attempts WHERE notification_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_delete_log_rows
    AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT
    EXECUTE FUNCTION pulse_delete_log_rows();
