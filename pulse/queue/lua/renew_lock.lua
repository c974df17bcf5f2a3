--[[
  renew_lock: extend a lock's expiry only if this holder still owns it.

  KEYS[1]  the lock key
  ARGV[1]  the holder's token
  ARGV[2]  the new time to live (ms)

  Returns: 1 when renewed, 0 when the lock had expired or belongs to another holder.
  Side effects: PEXPIRE of the lock key. Compare-and-extend must be atomic, or a holder whose
  lock expired could extend its successor's lock and keep it from noticing the loss.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
