-- history.lua: append one sample of a profile's counts, at most once per interval.
--
-- Every broker replica runs the sampling job; the interval check makes them
-- share one series instead of writing N samples per tick. Counts are read
-- inside the script, so a sample is one consistent moment.
--
-- KEYS[1] history:{profile}   list of "t warming ready claimed queue", newest first
-- KEYS[2] warming:{profile}
-- KEYS[3] ready:{profile}
-- KEYS[4] claimed:{profile}
-- KEYS[5] queue:{profile}
-- ARGV[1] now (unix seconds)
-- ARGV[2] interval (seconds): skip when the newest sample is younger than 90% of it
-- ARGV[3] cap: samples kept
-- Returns 1 when a sample was written, 0 when skipped.
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local newest = redis.call('LINDEX', KEYS[1], 0)
if newest then
  local t = tonumber(string.match(newest, '^(%S+)'))
  if t and now - t < interval * 0.9 and now >= t then
    return 0
  end
end
local sample = string.format('%.0f %d %d %d %d', now,
  redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]))
redis.call('LPUSH', KEYS[1], sample)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
return 1
