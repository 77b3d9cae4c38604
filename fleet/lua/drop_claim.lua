-- drop_claim.lua: forget a user's session whose pod no longer exists (compare-and-delete).
--
-- end_pod ends a session through its pod; this is for what end_pod cannot
-- reach: a claim whose pod record is gone, already ending, or serves someone
-- else, and an activity entry left without any claim. Nothing is removed when
-- the claim changed since the caller looked (a new claim is never touched).
--
-- KEYS[1] claim:{user}
-- KEYS[2] activity
-- KEYS[3] audit (a stream)
-- ARGV[1] user
-- ARGV[2] the claim's pod the caller saw ("" = the caller saw no claim)
-- ARGV[3] optional: why the session ended (with ARGV[4])
-- ARGV[4] optional: a "tell" (fleet/notices.py): leave the user the notice and
--         audit the end, here, as end_pod does (_tell.lua; "" = not)
-- ARGV[5] optional: now (with ARGV[4])
-- The pod and the notice are named by the prelude's pod_key and ended_key
-- (fleet/scripts.py, from fleet/keys.py).
-- Publishes (fleet/events.py) `release PROFILE USER` when a stale claim was deleted.
-- Returns 1 when a stale claim was deleted, 2 when only a stray activity entry
-- was, 0 when nothing was stale.
-- The user leaves the holders of the claim's groups (_groups.lua).
--@include _tell
--@include _groups
local pod = redis.call('HGET', KEYS[1], 'pod')
if ARGV[2] == '' then
  if pod then
    return 0
  end
  return 2 * redis.call('ZREM', KEYS[2], ARGV[1])
end
if pod ~= ARGV[2] then
  return 0
end
local pod_hash = pod_key(pod)
local state = redis.call('HGET', pod_hash, 'state')
if state and state ~= 'deleting' and redis.call('HGET', pod_hash, 'user') == ARGV[1] then
  return 0
end
local profile = redis.call('HGET', KEYS[1], 'profile') or ''
local since = tonumber(redis.call('HGET', KEYS[1], 'since')) or 0
local groups = redis.call('HGET', KEYS[1], 'groups') or ''
local node = redis.call('HGET', pod_hash, 'node') or ''
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
leave_groups(ARGV[1], groups)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
publish(EVENT.release, profile, ARGV[1])
if ARGV[4] and ARGV[4] ~= '' then
  tell_ended(KEYS[3], ARGV[4], ARGV[1], pod, profile, ARGV[3], ARGV[5], since, seen,
             groups, node)
end
return 1
