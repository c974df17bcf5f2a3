--[[
  enqueue: append a job to its priority stream and index it by job id.

  KEYS[1]  the priority stream
  KEYS[2]  the index hash (job id -> "<stream> <entry id>")
  ARGV[1]  job id
  ARGV[2]  the encoded message (field "m")

  Returns: the new entry id.
  Side effects: XADD and HSET together, so every entry in a stream is findable by job id; the
  reconciler relies on the index to tell which committed jobs Redis has lost.
]]
local entry_id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], KEYS[1] .. ' ' .. entry_id)
return entry_id
