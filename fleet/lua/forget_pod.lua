-- forget_pod.lua: drop every trace of a pod the backend has deleted.
--
-- KEYS[1] pod:{id}
-- KEYS[2] deleting
-- ARGV[1] pod id
-- The profile's state sets are named by the prelude's warming_key, ready_key,
-- claimed_key (fleet/scripts.py, from fleet/keys.py).
-- Returns 1 when something was removed.
local profile = redis.call('HGET', KEYS[1], 'profile') or ''
for _, set in ipairs({warming_key(profile), ready_key(profile), claimed_key(profile)}) do
  redis.call('ZREM', set, ARGV[1])
end
local removed = redis.call('SREM', KEYS[2], ARGV[1])
return removed + redis.call('DEL', KEYS[1])
