--[[
  live_partitions: say this process is alive with its partition count, raise the remembered
  count to it; the highest count alive.

  KEYS[1]  the live partition counts (a sorted set: "<count>:<process>" scored by last seen, ms)
  KEYS[2]  the remembered partition count (remember_partitions.lua)
  ARGV[1]  this process's member ("<count>:<process>")
  ARGV[2]  now in ms since the epoch, or empty: Redis's own clock (TIME). Production leaves it
           empty, so no host's clock decides whether another process is alive; tests pass one.
  ARGV[3]  the liveness window (ms): a member not seen within it is a process that stopped
  ARGV[4]  this process's count

  Returns: the highest count among the members seen within the window, this one's included.
  Side effects: ZADD of ARGV[1] at now; ZREMRANGEBYSCORE of the members older than the window
  (a process that died without leaving); SET of KEYS[2] to ARGV[4] when it is higher (after
  Redis lost its data, a running process on more partitions raises it again). Registering and
  reading in one script, so a process never reads a set without itself.
]]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window, own = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
if own > (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) then
  redis.call('SET', KEYS[2], own)
end
local highest = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local count = tonumber(string.match(member, '^(%d+):'))
  if count and count > highest then
    highest = count
  end
end
return highest
