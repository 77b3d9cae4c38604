-- bind.lua: record that the platform gave a user a given pod (Agones allocation).
--
-- The platform chose the pod; this writes the claim in ONE atomic step, the
-- way claim.lua does for a pod taken from the ready set. If the user already
-- holds another pod, that claim is kept and this pod is reported as an orphan.
--
-- KEYS[1] state marker       (missing = index being rebuilt: bind nothing)
-- KEYS[2] claim:{user}
-- KEYS[3] pod:{pod}
-- KEYS[4] warming:{profile}
-- KEYS[5] ready:{profile}
-- KEYS[6] claimed:{profile}
-- KEYS[7] activity
-- KEYS[8] queue:{profile}
-- KEYS[9] queue-seen:{profile}
-- KEYS[10] queue-order:{profile} (the line's order: _line.lua)
-- KEYS[11] blocked (fleet/store/blocks.py): blocked since claim.lua said "go": nothing written
-- ARGV[1] user
-- ARGV[2] profile
-- ARGV[3] pod id
-- ARGV[4] addr
-- ARGV[5] now
-- ARGV[6] created (unix seconds)
-- ARGV[7] claimed at (unix seconds, from the pod's record)
-- ARGV[8] optional: the user's groups, JSON text, kept on a new claim ("" = unknown)
-- ARGV[9], ARGV[10] optional: the group limits, as claim.lua takes them: checked again
--         here, since two brokers may both have been told "go" for one last place
--
-- Publishes (fleet/events.py) `claim PROFILE USER` for a new claim.
--
-- Returns one of
--   {"rebuilding"}
--   {"existing", field, value, ...}   the user's claim (on this pod, or another: orphan)
--   {"new", field, value, ...}        the claim just written, plus queued_at
--   {"gone"}                          the pod is being deleted, or someone else's
--   {"limited", kind, group, limit, held}  a group limit applies: nothing written
--   {"blocked"}                       KEYS[11] names the user: nothing written
--@include _groups
--@include _write_claim
local user, profile, pod, addr, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'rebuilding'}
end
local current = redis.call('HGETALL', KEYS[2])
if #current > 0 then
  table.insert(current, 1, 'existing')
  return current
end
local state = redis.call('HGET', KEYS[3], 'state')
local holder = redis.call('HGET', KEYS[3], 'user')
if state == 'deleting' or (holder and holder ~= user) then
  return {'gone'}
end
if redis.call('SISMEMBER', KEYS[11], user) == 1 then
  return {'blocked'}
end
local refused = group_refusal(user, ARGV[9], ARGV[10])
if refused then
  return refused
end
local queued_at = redis.call('ZSCORE', KEYS[8], user) or ''
if not state then
  redis.call('HSET', KEYS[3], 'id', pod, 'profile', profile, 'created', ARGV[6])
end
redis.call('ZREM', KEYS[4], pod)
redis.call('ZREM', KEYS[5], pod)
local k = {pod = KEYS[3], claim = KEYS[2], claimed = KEYS[6], activity = KEYS[7],
           queue = KEYS[8], seen = KEYS[9], order = KEYS[10]}
return write_claim(k, user, profile, pod, addr, ARGV[7], now, queued_at, ARGV[8] or '')
