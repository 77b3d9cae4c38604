-- add_pod.lua: record a new warming pod, unless the profile is already at max.
--
-- KEYS[1] pod:{id}
-- KEYS[2] warming:{profile}
-- KEYS[3] ready:{profile}
-- KEYS[4] claimed:{profile}
-- ARGV[1] max pods of the profile
-- ARGV[2] now
-- ARGV[3..] field, value pairs of the pod hash
-- Returns 1 when recorded, 0 when the profile is full or the id exists.
local total = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
if total >= tonumber(ARGV[1]) or redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[1], 'state', 'warming', 'created', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], redis.call('HGET', KEYS[1], 'id'))
return 1
