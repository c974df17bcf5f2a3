--[[
  live_partitions: say this process is alive with its partition count; the highest count alive.

  KEYS[1]  the live partition counts (a sorted set: "<count>:<process>" scored by last seen, ms)
  ARGV[1]  this process's member ("<count>:<process>")
  ARGV[2]  now (ms since the epoch)
  ARGV[3]  the liveness window (ms): a member not seen within it is a process that stopped

  Returns: the highest count among the members seen within the window, this one's included.
  Side effects: ZADD of ARGV[1] at ARGV[2]; ZREMRANGEBYSCORE of the members older than the
  window (a process that died without leaving). Registering and reading in one script, so a
  process never reads a set without itself.
]]
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
local highest = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local count = tonumber(string.match(member, '^(%d+):'))
  if count and count > highest then
    highest = count
  end
end
return highest
