--[[
  recipient_cap: count a delivery to one recipient against its cap (at most N per window), or
  say how long until the window allows it.

  KEYS[1]  the recipient's window (sorted set: notification id scored by when it counted, ms)
  ARGV[1]  now (ms since the epoch; the caller's clock)
  ARGV[2]  the window (ms)
  ARGV[3]  the cap: deliveries allowed within one window
  ARGV[4]  the notification's id

  Returns: 0 when it may go (counted now, or counted already: a retry of one notification
  counts once); else the ms until the oldest counted one leaves the window.
  Side effects: entries older than the window are dropped; an admitted notification is added;
  the key expires one window after its newest entry.
]]
local now, window, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  return 0
end
if redis.call('ZCARD', KEYS[1]) < cap then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window))
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, math.ceil(tonumber(oldest[2]) + window - now))
