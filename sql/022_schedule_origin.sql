-- 022_schedule_origin: which task module declared a schedule (arq's cron_jobs), NULL for one
-- made through the API.
--
-- Design note. A worker that loads module M registers M's cron entries at start; a schedule whose
-- origin is M but that M no longer declares is deleted then, as arq and Celery beat stop a cron
-- job removed from the code. Only M's own schedules are touched: workers loading other modules,
-- and schedules made through the API, keep theirs.

ALTER TABLE schedules ADD COLUMN origin text;
