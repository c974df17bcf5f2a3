--[[
  ack: acknowledge finished entries of one stream and forget them.

  KEYS[1]  the priority stream
  KEYS[2]  the index hash
  KEYS[3]  the stream's retry schedule (sorted set of entry ids by due time)
  ARGV[1]  the consumer group
  ARGV[2..] pairs: entry id, job id (job id may be "" when unknown)

  Returns: the number of entries that were pending and are now acknowledged.
  Side effects: XACK then XDEL, HDEL from the index, ZREM from the retry schedule, atomically,
  so the stream holds only entries that are waiting or in flight and Redis memory stays bounded
  by the work outstanding. Acknowledging twice is harmless. The index entry is removed only
  when it points at this entry: a job may have a newer entry (its next fallback step, a
  replay), which must stay findable.
]]
local acked = 0
for i = 2, #ARGV, 2 do
  local entry_id, job_id = ARGV[i], ARGV[i + 1]
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], entry_id)
  redis.call('XDEL', KEYS[1], entry_id)
  redis.call('ZREM', KEYS[3], entry_id)
  if job_id ~= '' and redis.call('HGET', KEYS[2], job_id) == KEYS[1] .. ' ' .. entry_id then
    redis.call('HDEL', KEYS[2], job_id)
  end
end
return acked
