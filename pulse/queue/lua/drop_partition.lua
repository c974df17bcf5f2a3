--[[
  drop_partition: delete every key of a retiring partition, only if it holds nothing at all.

  KEYS[1..n]        the partition's streams (priority and task streams), n of them
  KEYS[n+1..2n]     their retry schedules (same order)
  KEYS[2n+1..]      the rest: the due-time sets, the sets of tenants with a sub-stream, the
                    dead-letter stream, then keys deleted without a look (the scheduled jobs
                    hash, the index, the wake stream), ARGV[2] of those last
  ARGV[1]           n
  ARGV[2]           how many keys at the end are deleted without a look
  ARGV[3]           the consumer group

  Returns: 1 when the partition was empty and its keys are gone (or were already), 0 when
  something still waits there (nothing is deleted then).
  Side effects: DEL of every key named. Empty means: every stream without an entry and without a
  pending entry, every retry schedule, due-time set and tenants set empty (a tenant's sub-stream
  exists exactly while its tenant is in its set: retire_tenant.lua), the dead letters moved
  away. The look and the deletion are one script: no append can come between them, so nothing
  waiting is ever deleted. The index and the scheduled jobs hash are only views of the streams
  and the due-time sets: what they still name once those are empty is stale.
]]
local n, blind, group = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 1, n do
  if redis.call('XLEN', KEYS[i]) > 0 then
    return 0
  end
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[i], group)
  if ok and tonumber(pending[1]) > 0 then
    return 0
  end
end
for i = n + 1, #KEYS - blind do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'zset' and redis.call('ZCARD', KEYS[i]) > 0 then
    return 0
  elseif kind == 'set' and redis.call('SCARD', KEYS[i]) > 0 then
    return 0
  elseif kind == 'stream' and redis.call('XLEN', KEYS[i]) > 0 then
    return 0
  end
end
redis.call('DEL', unpack(KEYS))
return 1
