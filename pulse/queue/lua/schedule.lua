--[[
  schedule: put jobs in the due-time index (a sorted set per priority) with their messages.

  KEYS[1]     the scheduled jobs hash (job id -> encoded message)
  KEYS[2]     the index hash (job id -> "<stream> <entry id>": jobs a stream holds)
  KEYS[3..12] the scheduled sorted sets: notifications' of priorities 0..4, then tasks' of
              priorities 0..4 (KEYS[3 + slot])
  ARGV[1]     mode: "set" (accept, reschedule: always) or "restore" (the reconciler: skip a job
              a stream already holds)
  ARGV[2..]   quadruples: job id, slot (a notification's priority, a task's 5 + priority), due
              time (ms since the epoch), message

  Returns: the ids of the jobs indexed by this call; in "restore" mode only those that were
  missing (a job already in the index just has its due time set again).
  Side effects: ZADD and HSET together, so every member of a sorted set has its message. A
  job's member is its id: indexing it twice only moves its due time, never doubles it.
]]
local restore = ARGV[1] == 'restore'
local added = {}
for i = 2, #ARGV, 4 do
  local job_id, slot, due, message = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  if not (restore and redis.call('HEXISTS', KEYS[2], job_id) == 1) then
    redis.call('ZADD', KEYS[3 + slot], due, job_id)
    local new = redis.call('HSET', KEYS[1], job_id, message)
    if not restore or new == 1 then
      added[#added + 1] = job_id
    end
  end
end
return added
