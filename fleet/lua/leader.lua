-- leader.lua: take or keep a leader lock (one controller, one reaper).
--
-- KEYS[1] lock key
-- ARGV[1] this holder's token
-- ARGV[2] time to live (milliseconds)
-- Returns 1 when this holder leads (taken or renewed), 0 otherwise.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
