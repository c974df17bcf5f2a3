--[[
  unschedule: take a job out of the due-time index (it was cancelled).

  KEYS[1]  the scheduled jobs hash
  KEYS[2]  the job's scheduled sorted set
  ARGV[1]  job id

  Returns: 1 if it was in the sorted set, else 0.
  Side effects: ZREM and HDEL together. Only memory is at stake: a cancelled job that was
  streamed anyway is acknowledged without sending by the worker's claim.
]]
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
