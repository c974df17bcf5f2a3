--[[
  enqueue_tenant: append a job to its tenant's sub-stream of a priority and index it.

  KEYS[1]  the tenant's sub-stream ({prefix}:stream:<p>:t:<tenant>)
  KEYS[2]  the index hash (job id -> "<stream> <entry id>")
  KEYS[3]  the priority's set of tenants with a sub-stream
  KEYS[4]  the wake stream (read by blocked fetchers alongside the sub-streams they know)
  ARGV[1]  job id
  ARGV[2]  the encoded message (field "m")
  ARGV[3]  the tenant id
  ARGV[4]  the consumer group

  Returns: the new entry id.
  Side effects: SADD of the tenant, the consumer group made when the sub-stream is new (from id
  0, so this first entry is read), XADD and HSET, atomically: a sub-stream is in the set exactly
  when it exists with its group, so a fetcher that reads the set finds every entry, and
  retire_tenant.lua cannot delete a sub-stream between this script's SADD and XADD. A new
  sub-stream also gets a wake entry (trimmed to a few), so a fetcher blocked on the streams it
  knew sees the new tenant at once.
]]
if redis.call('SADD', KEYS[3], ARGV[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then
  local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[4], '0', 'MKSTREAM')
  if not ok and not string.find(tostring(err), 'BUSYGROUP') then
    return redis.error_reply(tostring(err))
  end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '64', '*', 't', ARGV[3])
end
local entry_id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], KEYS[1] .. ' ' .. entry_id)
return entry_id
