--[[
  dead_letter: move one entry to the dead-letter stream and acknowledge the original, atomically.

  KEYS[1]  the priority stream
  KEYS[2]  the dead-letter stream
  KEYS[3]  the index hash
  KEYS[4]  the stream's retry schedule
  ARGV[1]  the consumer group
  ARGV[2]  entry id
  ARGV[3]  job id ("" when the entry could not be decoded)
  ARGV[4]  reason
  ARGV[5]  now (ms since the epoch)

  Returns: the dead-letter entry id, or false when the entry no longer exists.
  Side effects: XADD to the dead-letter stream with the original fields (raw bytes, untouched)
  plus source, entry, job, reason and time; then XACK + XDEL of the original, HDEL from the
  index (when it points at this entry) and ZREM from the schedule. A crash between the copy
  and the acknowledgement is impossible: a script runs whole or not at all.
]]
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local entry = found[1]
if not entry then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local fields = {'source', KEYS[1], 'entry', ARGV[2], 'job', ARGV[3], 'reason', ARGV[4],
                'dead_at', ARGV[5]}
for i = 1, #entry[2], 2 do
  fields[#fields + 1] = 'f:' .. entry[2][i]
  fields[#fields + 1] = entry[2][i + 1]
end
local dead_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
if ARGV[3] ~= '' and redis.call('HGET', KEYS[3], ARGV[3]) == KEYS[1] .. ' ' .. ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
return dead_id
