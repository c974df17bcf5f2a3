--[[
  enqueue_once: append a released job to its priority stream unless Redis already holds it.

  KEYS[1]  the priority stream
  KEYS[2]  the index hash (job id -> "<stream> <entry id>")
  ARGV[1]  job id
  ARGV[2]  the encoded message (field "m")

  Returns: the new entry id, or false when the index already has the job.
  Every worker hears a release (pulse_job_released); the check and the append in one script
  make their streams hold it once.
]]
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return false
end
local entry_id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], KEYS[1] .. ' ' .. entry_id)
return entry_id
