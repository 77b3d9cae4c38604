-- end_pod.lua: take a pod out of service and end its claim (compare-and-delete).
--
-- Used for every way a pod ends: the user's session reclaimed (idle,
-- max_session, admin), the pod died, or a Ready pod retired by scale-down.
-- Idempotent: a pod already ending returns 0, so two reapers reclaim once.
--
-- KEYS[1] pod:{id}
-- KEYS[2] deleting
-- KEYS[3] activity
-- KEYS[4] session-ends (a hash "PROFILE<TAB>REASON" -> count: fleet/heartbeats.py)
-- KEYS[5] audit (a stream)
-- ARGV[1] pod id
-- ARGV[2] now
-- ARGV[3] reason
-- ARGV[4] only when the pod is in this state ("" = any state)
-- ARGV[5] only when the pod serves this user ("" = any user)
-- ARGV[6] optional: only when the user's last activity is at or before this
--         (the reaper's guard against activity written since it looked; "" = any)
-- ARGV[7] optional: a "tell" (fleet/notices.py): when a user's session ends, leave
--         them the notice and audit the end, here (_tell.lua says why; "" = not)
-- The claim, the profile's state sets and the notice are named by the prelude's
-- claim_key, warming_key, ready_key, claimed_key, ended_key (fleet/scripts.py,
-- from fleet/keys.py).
-- Publishes (fleet/events.py) `release PROFILE USER` when the pod had a user, and
-- counts that session's end in KEYS[4], once whoever ends it.
-- Returns {1, user, profile, claimed_at, node, groups, slot} when ended, {0} otherwise
-- (groups: the claim's, JSON text, "" = unknown; slot: the local backend's GPU slot).
-- The user leaves the holders of the claim's groups (_groups.lua).
--@include _tell
--@include _groups
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
if ARGV[6] and ARGV[6] ~= '' and user ~= '' then
  local seen = redis.call('ZSCORE', KEYS[3], user)
  if seen and tonumber(seen) > tonumber(ARGV[6]) then
    return {0}
  end
end
local profile = redis.call('HGET', KEYS[1], 'profile') or ''
local claimed_at = redis.call('HGET', KEYS[1], 'claimed_at') or ''
local node = redis.call('HGET', KEYS[1], 'node') or ''
local groups = ''
for _, set in ipairs({warming_key(profile), ready_key(profile), claimed_key(profile)}) do
  redis.call('ZREM', set, ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', 'deleting', 'ended_at', ARGV[2], 'end_reason', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
if user ~= '' then
  local claim = claim_key(user)
  local since = tonumber(claimed_at) or 0
  local seen = redis.call('ZSCORE', KEYS[3], user)
  if redis.call('HGET', claim, 'pod') == ARGV[1] then
    since = tonumber(redis.call('HGET', claim, 'since')) or since
    groups = redis.call('HGET', claim, 'groups') or ''
    leave_groups(user, groups)
    redis.call('DEL', claim)
    redis.call('ZREM', KEYS[3], user)
  end
  publish(EVENT.release, profile, user)
  redis.call('HINCRBY', KEYS[4], profile .. '\t' .. ARGV[3], 1)
  if ARGV[7] and ARGV[7] ~= '' then
    tell_ended(KEYS[5], ARGV[7], user, ARGV[1], profile, ARGV[3], ARGV[2], since, seen,
               groups, node)
  end
end
return {1, user, profile, claimed_at, node, groups, redis.call('HGET', KEYS[1], 'slot') or ''}
