-- mark_ready.lua: a warming pod answered its probe; offer it for claims.
--
-- KEYS[1] pod:{id}
-- KEYS[2] warming:{profile}
-- KEYS[3] ready:{profile}
-- ARGV[1] pod id
-- ARGV[2] now
-- ARGV[3] address the WebUI answers on
-- ARGV[4] optional: the node it runs on ("" = none or not known), written with the
--         state, so that a claim the moment it is offered already sees it
-- Publishes (fleet/events.py) `ready PROFILE POD` when the pod became ready.
-- Returns 1 when the pod became ready, 0 when it was not warming.
if redis.call('HGET', KEYS[1], 'state') ~= 'warming' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'ready', 'ready_at', ARGV[2], 'addr', ARGV[3])
if ARGV[4] and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'node', ARGV[4])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
publish(EVENT.ready, redis.call('HGET', KEYS[1], 'profile'), ARGV[1])
return 1
