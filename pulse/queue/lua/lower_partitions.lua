--[[
  lower_partitions: lower the remembered partition count once its top partition is removed.

  KEYS[1]  the partition count
  ARGV[1]  the count expected now (the removed partition's number + 1)
  ARGV[2]  the count to remember instead (the removed partition's number)

  Returns: the count remembered afterwards.
  Side effects: SET of KEYS[1] to ARGV[2] only when it still holds ARGV[1]: a process that
  started meanwhile with a higher count (remember_partitions.lua) keeps its raise.
]]
local known = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if known == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return tonumber(ARGV[2])
end
return known
