--[[
  heartbeat: a worker says it is alive (and what it is doing), and forgets workers long silent.

  KEYS[1]  the workers hash (name -> heartbeat JSON)
  KEYS[2]  the workers' last-seen sorted set (name scored by ms)
  ARGV[1]  worker name
  ARGV[2]  heartbeat JSON ("" to leave: a worker stopping gracefully)
  ARGV[3]  now (ms since the epoch)
  ARGV[4]  forget after (ms): members silent longer than this are removed

  Returns: the number of silent workers forgotten.
  Side effects: HSET + ZADD of this worker (or HDEL + ZREM when leaving); HDEL + ZREM of every
  worker whose last heartbeat is older than now - ARGV[4]. Readers judge liveness from the
  heartbeat's own time, so a forgotten worker was long dead already.
]]
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[4])))
for _, name in ipairs(stale) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
return #stale
