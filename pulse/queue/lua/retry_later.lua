--[[
  retry_later: schedule a pending entry for another attempt.

  KEYS[1]  the priority stream
  KEYS[2]  the stream's retry schedule (sorted set of entry ids by due time, ms)
  ARGV[1]  the consumer group
  ARGV[2]  the consumer that owns the entry now
  ARGV[3..] triples: entry id, due time (ms since the epoch), made ("1" when the attempt called
           a provider, "0" when none was called: every provider's breaker was open)

  Returns: the number of entries scheduled.
  Side effects: the entry stays pending (its delivery count is the attempt number); it is put in
  the schedule only if this consumer still owns it, so a worker that lost its lease cannot
  schedule an entry another worker is delivering. An attempt not made is given back: the
  delivery count goes down by one (XCLAIM RETRYCOUNT ... JUSTID), so the reclaim that takes
  the entry again hands out the same attempt number and max_attempts counts only calls made.
]]
local scheduled = 0
for i = 3, #ARGV, 3 do
  local entry_id, due, made = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local info = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
  if info[1] and info[1][2] == ARGV[2] then
    if made == '0' and info[1][4] > 0 then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry_id,
                 'RETRYCOUNT', info[1][4] - 1, 'JUSTID')
    end
    redis.call('ZADD', KEYS[2], due, entry_id)
    scheduled = scheduled + 1
  end
end
return scheduled
