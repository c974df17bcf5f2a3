--[[
  throttle: take one token from a provider account's bucket, or say when to come back.

  KEYS[1]  the provider's bucket (hash: tokens, ts = when tokens was computed (ms),
           tail = the next return time promised to a refused caller (ms))
  ARGV[1]  now (ms since the epoch; the caller's clock)
  ARGV[2]  rate: tokens per ms
  ARGV[3]  burst: the bucket's size (a full bucket is where a missing key starts)

  Returns: 0 when a token was taken (send now); else the ms to wait before asking again.
  Side effects: the bucket refills at `rate` up to `burst` and loses the token taken. A refused
  caller is given the next free return time (one token's interval after the last one given),
  so deferred work comes back spread out at the provider's rate instead of all at once. The
  key expires once the bucket would be full and no return time is pending.
]]
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'tail')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local tail = tonumber(state[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  local due = math.max(tail, now + (1 - tokens) / rate)
  tail = due + 1 / rate
  wait = math.ceil(due - now)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.3f', now),
           'tail', string.format('%.3f', tail))
local full_in = (burst - tokens) / rate
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(math.max(full_in, tail - now))))
return wait
