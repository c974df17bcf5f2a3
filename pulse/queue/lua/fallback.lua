--[[
  fallback: replace an entry whose channel failed for good by the entry of the next step of its
  notification's fallback chain, atomically.

  KEYS[1]  the stream of the entry that failed
  KEYS[2]  the stream of the next step: its tenant's sub-stream of its priority when ARGV[5]
           names the tenant (PULSE_TENANT_FAIRNESS), else its priority's stream (usually the
           failed entry's own)
  KEYS[3]  the index hash
  KEYS[4]  the failed entry's stream's retry schedule
  KEYS[5]  the set of tenants with a sub-stream of the next step's priority
  KEYS[6]  the wake stream
  ARGV[1]  the consumer group
  ARGV[2]  the failed entry's id
  ARGV[3]  job id
  ARGV[4]  the next step's encoded message (field "m")
  ARGV[5]  the tenant id when KEYS[2] is its sub-stream, else ""

  Returns: the new entry id, or false when the failed entry no longer exists (this transition
  ran already: running it twice must not stream the next step twice).
  Side effects: XACK + XDEL + ZREM of the failed entry, XADD of the next step (a fresh entry, so
  its attempts count from 1) and HSET of the index to it. A crash can leave neither both entries
  nor none. A sub-stream that does not exist yet is made with its group, its tenant added to
  the set and a wake entry added, as enqueue_tenant.lua does.
]]
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if not found[1] then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
if ARGV[5] ~= '' and (redis.call('SADD', KEYS[5], ARGV[5]) == 1 or redis.call('EXISTS', KEYS[2]) == 0) then
  local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
  if not ok and not string.find(tostring(err), 'BUSYGROUP') then
    return redis.error_reply(tostring(err))
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', '64', '*', 't', ARGV[5])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
local entry_id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[3], KEYS[2] .. ' ' .. entry_id)
return entry_id
