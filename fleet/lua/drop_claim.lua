-- drop_claim.lua: forget a user's session whose pod no longer exists (compare-and-delete).
--
-- end_pod ends a session through its pod; this is for what end_pod cannot
-- reach: a claim whose pod record is gone, already ending, or serves someone
-- else, and an activity entry left without any claim. Nothing is removed when
-- the claim changed since the caller looked (a new claim is never touched).
--
-- KEYS[1] claim:{user}
-- KEYS[2] activity
-- ARGV[1] user
-- ARGV[2] the claim's pod the caller saw ("" = the caller saw no claim)
-- The pod is named by the prelude's pod_key (fleet/scripts.py, from fleet/keys.py).
-- Publishes (fleet/events.py) `release PROFILE USER` when a stale claim was deleted.
-- Returns 1 when a stale claim was deleted, 2 when only a stray activity entry
-- was, 0 when nothing was stale.
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
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
publish(EVENT.release, profile, ARGV[1])
return 1
