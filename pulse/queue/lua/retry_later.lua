--[[
  retry_later: schedule a pending entry for another attempt.

  KEYS[1]  the priority stream
  KEYS[2]  the stream's retry schedule (sorted set of entry ids by due time, ms)
  ARGV[1]  the consumer group
  ARGV[2]  the consumer that owns the entry now
  ARGV[3..] pairs: entry id, due time (ms since the epoch)

  Returns: the number of entries scheduled.
  Side effects: the entry stays pending (its delivery count is the attempt number); it is put in
  the schedule only if this consumer still owns it, so a worker that lost its lease cannot
  schedule an entry another worker is delivering.
]]
local scheduled = 0
for i = 3, #ARGV, 2 do
  local entry_id, due = ARGV[i], ARGV[i + 1]
  local info = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
  if info[1] and info[1][2] == ARGV[2] then
    redis.call('ZADD', KEYS[2], due, entry_id)
    scheduled = scheduled + 1
  end
end
return scheduled
