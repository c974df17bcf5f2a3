-- 017_group_results_bound: a group callback's `results` argument is bounded.
--
-- Design note. sql/014 gathered a group's members' results into its callback's payload at
-- release, however large: 1,000 members of 1 MB each would build a 1 GB row (and a stream entry
-- as big). Now the worker writes each result's JSON size (`result_bytes`) with the result, and
-- a callback's payload carries the bound in force when it was accepted (`group_bytes`:
-- PULSE_MAX_GROUP_RESULTS_BYTES). At release the members' result sizes are summed (no result
-- is read for it): within the bound the callback gets the results in order, as before; over it,
-- `results` is the members' job ids in order and the payload's `results_omitted` says why,
-- naming the bound (the task reads it as `ctx.results_omitted`; each member's result stays
-- readable at GET /api/jobs/{id} for its retention). The API accepts a group whose results
-- could exceed the bound only if its callback's `results` argument takes those ids (else 422
-- naming `$.then.args.results`), so no accepted callback fails for its arguments. A callback
-- accepted before this migration (no `group_bytes`) is released as before.

ALTER TABLE job_results ADD COLUMN result_bytes integer;

CREATE FUNCTION pulse_group_results(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    bound bigint := (payload ->> 'group_bytes')::bigint;
    total bigint;
BEGIN
    IF bound IS NOT NULL THEN
        SELECT coalesce(sum(r.result_bytes), 0) INTO total
          FROM jsonb_array_elements_text(payload -> 'group') AS m(id)
          JOIN job_results r ON r.job_id = m.id::uuid;
        IF total > bound THEN
            RETURN jsonb_set(payload, '{args,results}', payload -> 'group')
                || jsonb_build_object('results_omitted', format(
                       'the members'' results total %s bytes of JSON, over '
                       'PULSE_MAX_GROUP_RESULTS_BYTES (%s): results holds their job ids, in order',
                       total, bound));
        END IF;
    END IF;
    RETURN jsonb_set(payload, '{args,results}',
        (SELECT coalesce(jsonb_agg(r.result ORDER BY m.ord), '[]'::jsonb)
           FROM jsonb_array_elements_text(payload -> 'group') WITH ORDINALITY AS m(id, ord)
           LEFT JOIN job_results r ON r.job_id = m.id::uuid));
END
$$;

CREATE OR REPLACE FUNCTION pulse_release_children() RETURNS trigger LANGUAGE plpgsql AS $$
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
               payload = CASE WHEN n.payload ? 'group' THEN pulse_group_results(n.payload)
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
