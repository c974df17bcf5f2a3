--[[
  reclaim: take back entries that are due for another attempt, and entries abandoned by a
  crashed worker, for this consumer.

  KEYS[1]  the priority stream
  KEYS[2]  the stream's retry schedule (sorted set of entry ids by due time, ms)
  ARGV[1]  the consumer group
  ARGV[2]  this consumer
  ARGV[3]  now (ms since the epoch; the caller passes the time in)
  ARGV[4]  lease (ms): an entry idle this long, not scheduled for retry, was abandoned
  ARGV[5]  at most this many entries

  Returns: a flat list: entry id, delivery count (the attempt number), message field "m" (or
  false when the entry has no such field), repeated.
  Side effects: XCLAIM (which increments the delivery count) and ZREM of due entries. Scripts run
  one at a time, so two reclaimers never claim one entry twice. An entry deleted meanwhile is
  dropped from the schedule and the pending list.
]]
local stream, schedule, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local now, lease, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local taken = 0

local function field_m(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then return fields[i + 1] end
  end
  return false
end

local function take(entry_id, min_idle)
  local claimed = redis.call('XCLAIM', stream, group, me, min_idle, entry_id)
  local entry = claimed[1]
  if not entry then
    return
  end
  if entry == false or type(entry) ~= 'table' or entry[2] == nil or entry[2] == false then
    -- the entry was deleted from the stream: nothing left to deliver
    redis.call('XACK', stream, group, entry_id)
    return
  end
  local info = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
  out[#out + 1] = entry_id
  out[#out + 1] = info[1][4]
  out[#out + 1] = field_m(entry[2])
  taken = taken + 1
end

for _, entry_id in ipairs(redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', schedule, entry_id)
  take(entry_id, 0)
end

if taken < limit then
  local idle = redis.call('XPENDING', stream, group, 'IDLE', lease, '-', '+', limit - taken)
  for _, info in ipairs(idle) do
    if not redis.call('ZSCORE', schedule, info[1]) then
      take(info[1], lease)
    end
  end
end
return out
