--[[
  ack: acknowledge entries of one stream for the consumer group and delete them.

  KEYS[1]  the priority stream
  ARGV[1]  the consumer group
  ARGV[2..] entry ids to acknowledge

  Returns: the number of entries that were pending and are now acknowledged.
  Side effects: XACK then XDEL of the same ids, atomically, so the stream holds only entries that
  are waiting or in flight and Redis memory stays bounded by the work outstanding. An id that was
  not pending (acknowledged before) is deleted all the same: deleting twice is harmless.
]]
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked
