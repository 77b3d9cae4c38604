-- drop_waiters.lua: forget waiting users who left (no sign of life within the grace).
--
-- claim.lua does the same for the profile it claims from, but only when somebody
-- claims: a closed tab in a profile nobody else uses stayed in line for good and
-- kept a pod warm for nobody. The controller runs this on every pass, before it
-- counts the queue toward a profile's target.
--
-- KEYS[1] queue:{profile}
-- KEYS[2] queue-seen:{profile}
-- ARGV[1] cutoff (unix seconds): waiting users last seen before it are dropped
-- ARGV[2] profile
--
-- Returns the users dropped (the queue changed: one `queue PROFILE` event is published,
-- fleet/events.py).
local cutoff = '(' .. ARGV[1]
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
-- Someone queued without a sign of life at all counts from when they joined.
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  if not redis.call('ZSCORE', KEYS[2], entry) then
    table.insert(gone, entry)
  end
end
for _, who in ipairs(gone) do
  redis.call('ZREM', KEYS[1], who)
  redis.call('ZREM', KEYS[2], who)
end
if #gone > 0 then
  publish(EVENT.queue, ARGV[2])
end
return gone
