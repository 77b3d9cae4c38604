-- forget_pod.lua: drop every trace of a pod the backend has deleted.
--
-- KEYS[1] pod:{id}
-- KEYS[2] deleting
-- ARGV[1] pod id
-- ARGV[2] state key prefix
-- Returns 1 when something was removed.
local profile = redis.call('HGET', KEYS[1], 'profile') or ''
for _, s in ipairs({'warming', 'ready', 'claimed'}) do
  redis.call('ZREM', ARGV[2] .. s .. ':' .. profile, ARGV[1])
end
local removed = redis.call('SREM', KEYS[2], ARGV[1])
return removed + redis.call('DEL', KEYS[1])
