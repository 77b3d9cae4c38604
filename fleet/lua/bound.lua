-- bound.lua: the claimer has finished binding the user's pod: people may be sent to it.
--
-- Only while the claim still names that pod: a claim ended and made again
-- meanwhile (another pod) stays binding until its own claimer is done.
--
-- KEYS[1] claim:{user}
-- ARGV[1] pod id
-- ARGV[2] user
-- Publishes (fleet/events.py) `bound PROFILE USER` when the claim was binding, so other
-- brokers' requests waiting for it (Fleet._when_bound, fleet/service.py) go on at once.
-- Returns 1 when the claim was marked bound, 0 when it names another pod or is gone.
if redis.call('HGET', KEYS[1], 'pod') ~= ARGV[1] then
  return 0
end
if redis.call('HDEL', KEYS[1], 'binding') == 1 then
  publish(EVENT.bound, redis.call('HGET', KEYS[1], 'profile') or '', ARGV[2])
end
return 1
