--[[
  renew: heartbeat the leases of entries this consumer is delivering.

  KEYS[1]  the priority stream
  ARGV[1]  the consumer group
  ARGV[2]  this consumer
  ARGV[3..] entry ids

  Returns: the entry ids this consumer no longer owns (another worker reclaimed them).
  Side effects: XCLAIM ... JUSTID resets an owned entry's idle time without counting a delivery,
  so a slow provider call is never mistaken for a crashed worker.
]]
local lost = {}
for i = 3, #ARGV do
  local entry_id = ARGV[i]
  local info = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
  if info[1] and info[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry_id, 'JUSTID')
  else
    lost[#lost + 1] = entry_id
  end
end
return lost
