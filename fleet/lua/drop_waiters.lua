-- drop_waiters.lua: forget waiting users who left (no sign of life within the grace).
--
-- claim.lua does the same for the profile it claims from, but only when somebody
-- claims: a closed tab in a profile nobody else uses stayed in line for good and
-- kept a pod warm for nobody. The controller runs this on every pass, before it
-- counts the queue toward a profile's target.
--
-- KEYS[1] queue:{profile}
-- KEYS[2] queue-seen:{profile}
-- KEYS[3] queue-order:{profile} (the line's order, _line.lua: mended here every pass, so a
--         user queued by a broker that knows no order gets a place in it)
-- ARGV[1] cutoff (unix seconds): waiting users last seen before it are dropped
-- ARGV[2] profile
--
-- Returns the users dropped (the queue changed: one `queue PROFILE` event is published,
-- fleet/events.py; also when the order was mended).
--@include _line
local cutoff = '(' .. ARGV[1]
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
-- Someone queued without a sign of life at all counts from when they joined.
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  if not redis.call('ZSCORE', KEYS[2], entry) then
    table.insert(gone, entry)
  end
end
for _, who in ipairs(gone) do
  leave_line(KEYS[1], KEYS[2], KEYS[3], who)
end
if mend_line(KEYS[1], KEYS[3]) > 0 or #gone > 0 then
  publish(EVENT.queue, ARGV[2])
end
return gone
