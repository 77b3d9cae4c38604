-- end_pod.lua: take a pod out of service and end its claim (compare-and-delete).
--
-- Used for every way a pod ends: the user's session reclaimed (idle,
-- max_session, admin), the pod died, or a Ready pod retired by scale-down.
-- Idempotent: a pod already ending returns 0, so two reapers reclaim once.
--
-- KEYS[1] pod:{id}
-- KEYS[2] deleting
-- KEYS[3] activity
-- ARGV[1] pod id
-- ARGV[2] now
-- ARGV[3] reason
-- ARGV[4] only when the pod is in this state ("" = any state)
-- ARGV[5] only when the pod serves this user ("" = any user)
-- ARGV[6] claim key prefix
-- ARGV[7] state key prefix (the sets are PREFIX .. state .. ':' .. profile)
-- ARGV[8] events channel
-- ARGV[9] optional: only when the user's last activity is at or before this
--         (the reaper's guard against activity written since it looked; "" = any)
-- Returns {1, user, profile, claimed_at} when ended, {0} otherwise.
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'deleting' then
  return {0}
end
if ARGV[4] ~= '' and state ~= ARGV[4] then
  return {0}
end
local user = redis.call('HGET', KEYS[1], 'user') or ''
if ARGV[5] ~= '' and user ~= ARGV[5] then
  return {0}
end
if ARGV[9] and ARGV[9] ~= '' and user ~= '' then
  local seen = redis.call('ZSCORE', KEYS[3], user)
  if seen and tonumber(seen) > tonumber(ARGV[9]) then
    return {0}
  end
end
local profile = redis.call('HGET', KEYS[1], 'profile') or ''
for _, s in ipairs({'warming', 'ready', 'claimed'}) do
  redis.call('ZREM', ARGV[7] .. s .. ':' .. profile, ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', 'deleting', 'ended_at', ARGV[2], 'end_reason', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
if user ~= '' then
  local claim_key = ARGV[6] .. user
  if redis.call('HGET', claim_key, 'pod') == ARGV[1] then
    redis.call('DEL', claim_key)
    redis.call('ZREM', KEYS[3], user)
  end
  redis.call('PUBLISH', ARGV[8], 'release ' .. profile .. ' ' .. user)
end
return {1, user, profile, redis.call('HGET', KEYS[1], 'claimed_at') or ''}
