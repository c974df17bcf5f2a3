--[[
  unlock: release a lock only if this holder still owns it.

  KEYS[1]  the lock key
  ARGV[1]  the holder's token

  Returns: 1 when released, 0 when the lock had expired or belongs to another holder.
  Side effects: DEL of the lock key. Compare-and-delete must be atomic, or a holder whose lock
  expired could delete the next holder's lock.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
