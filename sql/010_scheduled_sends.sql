-- 010_scheduled_sends: a due time on notifications.
--
-- Design note. PostgreSQL is the truth of a schedule: a notification accepted for later is
-- committed with status 'scheduled' and its due time `send_at` (UTC instant; for one sent at
-- once it stays NULL, or keeps the past time the client asked for). Redis only indexes due
-- times (a sorted set per priority) so the scheduler need not poll this table; when Redis
-- loses that index the reconciler rebuilds it from the partial index below, which also serves
-- the list's due-time filters. Moving a row 'scheduled' -> 'queued' is idempotent (only rows
-- still 'scheduled' move) and the worker's claim accepts a due 'scheduled' row too, so a
-- scheduler that dies between streaming and recording loses nothing and sends nothing twice.
-- Either may write the 'queued' audit row that says it fell due (detail 'due'); a notification
-- falls due once in its life, so a unique partial index keeps the one that commits first when
-- the scheduler's record and a worker's claim race.

ALTER TABLE notifications ADD COLUMN send_at timestamptz;

CREATE INDEX notifications_scheduled ON notifications (send_at, id) WHERE status = 'scheduled';

CREATE UNIQUE INDEX audit_due_once ON audit (notification_id) WHERE detail = 'due';
