--[[
  task_slot: a fleet-wide counting semaphore with leases (a task's fleet_concurrency).

  KEYS[1]  the task's slot set (holder token -> lease end, ms, Redis clock)
  ARGV[1]  "acquire", "renew" or "release"
  ARGV[2]  the holder's token (unique per run)
  ARGV[3]  lease length, ms (acquire, renew)
  ARGV[4]  the limit (acquire)

  Returns: 1 if the token holds a slot afterwards (acquire, renew), 0 if not; release: 1.
  Leases past their end are dropped first, so the slot of a holder that was SIGKILLed (and so
  stopped renewing) comes back after its lease. The Redis clock is the only clock used.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, token = ARGV[1], ARGV[2]
if op == 'release' then
  redis.call('ZREM', KEYS[1], token)
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
local held = redis.call('ZSCORE', KEYS[1], token)
if op == 'renew' and not held then
  return 0  -- the lease ran out (a stalled holder): the slot may be someone else's now
end
if op == 'acquire' and not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, token)
redis.call('PEXPIRE', KEYS[1], lease * 2)  -- gone with its last holder
return 1
