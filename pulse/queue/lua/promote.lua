--[[
  promote: move the jobs that are due from the scheduled sorted sets into their streams, most
  urgent priority first, in order of due time within one. Each sorted set has its stream: a
  deferred task job goes into the task stream of its priority; a notification goes into its
  tenant's sub-stream when the caller routed it there (PULSE_TENANT_FAIRNESS), else into the
  priority stream.

  KEYS[1]      the scheduled jobs hash (job id -> encoded message)
  KEYS[2]      the index hash (job id -> "<stream> <entry id>")
  KEYS[3]      the wake stream (a new sub-stream gets an entry, as in enqueue_tenant.lua)
  KEYS[4..3+n]       n scheduled sorted sets, most urgent first
  KEYS[4+n..3+2n]    the stream of each (same order)
  KEYS[4+2n..3+3n]   the set of tenants with a sub-stream of each one's priority (same order)
  KEYS[4+3n..]       the tenants' sub-streams routed to (m of them)
  ARGV[1]      now (ms since the epoch; the caller passes the time in)
  ARGV[2]      at most this many jobs
  ARGV[3]      n (the number of sorted sets)
  ARGV[4]      the consumer group (made on a sub-stream that is new)
  ARGV[5..]    triples routing a job to its tenant's sub-stream: job id, tenant id, the index
               (1..m) of its sub-stream among KEYS[4+3n..]; a due job without one goes to its
               set's stream

  Returns: {next due (ms) of what is left, or -1 when nothing is; then pairs: job id, its due
  time (ms)} for each job streamed.
  Side effects: per job, ZREM + HDEL of its message + XADD + HSET of the index, atomically:
  scripts run one at a time, so two schedulers never stream one job twice, and a job is always
  either in a sorted set or in a stream (findable by the reconciler), never neither. A job
  routed to a sub-stream also gets its tenant in the priority's set and the sub-stream its
  group when new (so the set names exactly the sub-streams that exist, as retire_tenant.lua
  expects). A member without a message (cannot happen short of a partial loss) is dropped: the
  reconciler indexes it again from PostgreSQL.
]]
local now, limit, n, group = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local routes = {}
for i = 5, #ARGV, 3 do
  routes[ARGV[i]] = {ARGV[i + 1], KEYS[3 + 3 * n + tonumber(ARGV[i + 2])]}
end
local out = {-1}
local moved = 0
for p = 0, n - 1 do
  local set, stream, tenants = KEYS[4 + p], KEYS[4 + n + p], KEYS[4 + 2 * n + p]
  if moved < limit then
    local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit - moved)
    for i = 1, #due, 2 do
      local job_id = due[i]
      local message = redis.call('HGET', KEYS[1], job_id)
      local target = stream
      local route = routes[job_id]
      if message and route then  -- the sub-stream and its group first: an error leaves the job
        target = route[2]
        if redis.call('SADD', tenants, route[1]) == 1 or redis.call('EXISTS', target) == 0 then
          local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', target, group, '0', 'MKSTREAM')
          if not ok and not string.find(tostring(err), 'BUSYGROUP') then
            return redis.error_reply(tostring(err))
          end
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', '64', '*', 't', route[1])
        end
      end
      redis.call('ZREM', set, job_id)
      redis.call('HDEL', KEYS[1], job_id)
      if message then
        local entry_id = redis.call('XADD', target, '*', 'm', message)
        redis.call('HSET', KEYS[2], job_id, target .. ' ' .. entry_id)
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
