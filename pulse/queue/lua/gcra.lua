--[[
  gcra: admit `cost` units against one or more rate limits at once, all or nothing (the
  generic cell rate algorithm: each limit keeps one number, its theoretical arrival time).

  KEYS[i]   limit i's state: a string holding its theoretical arrival time (ms since the epoch);
            the key names the limit's rate too, so a changed limit starts from a fresh state
  ARGV[1]   now (ms since the epoch; the caller's clock)
  ARGV[2]   cost: the units asked for (a batch asks for its items), >= 1
  ARGV[1+2i] limit i's emission interval: ms per unit (1000 / rate per second)
  ARGV[2+2i] limit i's burst: the units it admits at once (its quota)

  Returns: {admitted (1 or 0), retry_after_ms, remaining_1, reset_ms_1, remaining_2, ...}
    retry_after_ms  0 when admitted; else how long until every limit could admit `cost`
    remaining_i     the units limit i would still admit right now (after this request)
    reset_ms_i      how long until limit i is back to its whole burst
  Side effects: when every limit admits, each one's arrival time moves on by cost * interval
  (its key expires once it is back to its whole burst, where a missing key means the same);
  when any limit refuses, nothing changes, so a refused request costs nothing.
  A stored arrival time is never taken as later than now plus the limit's whole burst window:
  no state (another process's clock, an older limit) locks a client out longer than that.
]]
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local tats, retry = {}, 0
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or now), now)
  tat = math.min(tat, now + burst * interval)
  local allow_at = tat + cost * interval - burst * interval
  if allow_at > now then
    retry = math.max(retry, allow_at - now)
  end
  tats[i] = tat
end
local admitted = retry == 0
local answer = {admitted and 1 or 0, math.ceil(retry)}
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local tat = tats[i]
  if admitted then
    tat = tat + cost * interval
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX',
      string.format('%d', math.max(1, math.ceil(tat - now))))
  end
  local remaining = math.floor(burst - (tat - now) / interval + 1e-9)
  answer[#answer + 1] = math.max(0, remaining)
  answer[#answer + 1] = math.ceil(tat - now)
end
return answer
