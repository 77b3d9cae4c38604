-- unlock.lua: give a leader lock up, only if we still hold it.
--
-- KEYS[1] lock key
-- ARGV[1] this holder's token
-- Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
