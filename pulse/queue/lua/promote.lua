--[[
  promote: move the jobs that are due from the scheduled sorted sets into their priority
  streams, most urgent priority first, in order of due time within one. Each sorted set has
  its stream: a deferred task job goes into the task stream of its priority.

  KEYS[1]      the scheduled jobs hash (job id -> encoded message)
  KEYS[2]      the index hash (job id -> "<stream> <entry id>")
  KEYS[3..2+n]     n scheduled sorted sets, most urgent first
  KEYS[3+n..2+2n]  the stream of each (same order)
  ARGV[1]      now (ms since the epoch; the caller passes the time in)
  ARGV[2]      at most this many jobs

  Returns: {next due (ms) of what is left, or -1 when nothing is; then pairs: job id, its due
  time (ms)} for each job streamed.
  Side effects: per job, ZREM + HDEL of its message + XADD + HSET of the index, atomically:
  scripts run one at a time, so two schedulers never stream one job twice, and a job is always
  either in a sorted set or in a stream (findable by the reconciler), never neither. A member
  without a message (cannot happen short of a partial loss) is dropped: the reconciler indexes
  it again from PostgreSQL.
]]
local now, limit = ARGV[1], tonumber(ARGV[2])
local out = {-1}
local moved = 0
local n = (#KEYS - 2) / 2
for p = 0, n - 1 do
  local set, stream = KEYS[3 + p], KEYS[3 + n + p]
  if moved < limit then
    local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit - moved)
    for i = 1, #due, 2 do
      local job_id = due[i]
      redis.call('ZREM', set, job_id)
      local message = redis.call('HGET', KEYS[1], job_id)
      redis.call('HDEL', KEYS[1], job_id)
      if message then
        local entry_id = redis.call('XADD', stream, '*', 'm', message)
        redis.call('HSET', KEYS[2], job_id, stream .. ' ' .. entry_id)
        out[#out + 1] = job_id
        out[#out + 1] = due[i + 1]
        moved = moved + 1
      end
    end
  end
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] and (out[1] == -1 or tonumber(first[2]) < out[1]) then
    out[1] = tonumber(first[2])
  end
end
return out
