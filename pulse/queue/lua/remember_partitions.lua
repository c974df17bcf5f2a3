--[[
  remember_partitions: raise the remembered partition count to a process's own, never lower it.

  KEYS[1]  the partition count (a string integer; missing reads as 0)
  ARGV[1]  this process's PULSE_REDIS_PARTITIONS

  Returns: the count now remembered (the highest of the two): every partition below it may hold
  work, so a process serves that many (those above its own count as retiring).
  Side effects: SET of KEYS[1] when ARGV[1] is higher. Read and raise in one script, so two
  processes starting together with different counts leave the higher one.
]]
local own = tonumber(ARGV[1])
local known = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if own > known then
  redis.call('SET', KEYS[1], own)
  return own
end
return known
