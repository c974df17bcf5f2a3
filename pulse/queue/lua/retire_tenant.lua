--[[
  retire_tenant: drop tenants' sub-streams of one priority that hold nothing any more.

  KEYS[1]  the priority's set of tenants with a sub-stream
  KEYS[1 + i]      the i-th tenant's sub-stream (n tenants, in ARGV order)
  KEYS[1 + n + i]  the i-th tenant's sub-stream's retry schedule
  ARGV[1..n]  tenant ids

  Returns: the tenants retired.
  Side effects: for each tenant whose sub-stream is empty (ack.lua deletes every finished
  entry, so empty means nothing waiting, in flight or due for retry), DEL of the sub-stream
  (its group with it) and of its retry schedule, and SREM from the set, atomically: an append
  running after this makes the sub-stream and its group again (enqueue_tenant.lua). Idle
  tenants thus cost Redis nothing, and the fetcher's set stays the tenants with work.
]]
local n = #ARGV
local retired = {}
for i = 1, n do
  local stream, schedule = KEYS[1 + i], KEYS[1 + n + i]
  if redis.call('XLEN', stream) == 0 and redis.call('ZCARD', schedule) == 0 then
    redis.call('DEL', stream, schedule)
    redis.call('SREM', KEYS[1], ARGV[i])
    retired[#retired + 1] = ARGV[i]
  end
end
return retired
