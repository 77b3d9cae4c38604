-- reattach.lua: make the index say what a pod's own record says: it is USER's.
--
-- The record (a claim file, a label, an Allocated GameServer) is written before a
-- claim is served and never changes hands, so when the index disagrees (a Redis
-- failover to a replica that was behind, a restore from a backup) the record wins:
-- the pod is put back in its user's claim, never deleted for the disagreement.
--
-- KEYS[1] pod:{id}
-- KEYS[2] claim:{user}
-- KEYS[3] warming:{profile}
-- KEYS[4] ready:{profile}
-- KEYS[5] claimed:{profile}
-- KEYS[6] activity
-- KEYS[7] deleting
-- ARGV[1] pod id
-- ARGV[2] user (from the record)
-- ARGV[3] profile
-- ARGV[4] addr from the record ("" = keep the index's)
-- ARGV[5] claimed at, from the record (unix seconds)
-- ARGV[6] now
-- ARGV[7] created (unix seconds)
-- ARGV[8] claimed at as the record says it, to compare (0 = unknown: never the later)
-- ARGV[9] the claim's groups as the record keeps them (JSON text, "" = none): a claim
--         written here keeps them and its user joins the groups' holders (_groups.lua)
-- Other users' claims, the pod the index had USER on and its profile's state sets are
-- named by the prelude's key builders (fleet/scripts.py, from fleet/keys.py).
-- Publishes (fleet/events.py) `release PROFILE HOLDER` for a displaced holder and
-- `claim PROFILE USER` when repaired.
--
-- Returns one of
--   {"same"}                   the index already agrees
--   {"deleting"}               the pod is being ended: nothing to repair
--   {"bound", holder}          another user's bound claim holds the pod (nothing done)
--   {"holds", other_pod}       the index has USER on a pod claimed later than this
--                              record says: this record is the stale one (nothing done)
--   {"reattached", displaced, retired}
--                              repaired; displaced = the user the index had put on the
--                              pod instead ("" = nobody), whose claim was dropped;
--                              retired = the pod the index had USER on with an older
--                              claim ("" = none), now marked for deletion
--@include _groups
local pod, user, profile = ARGV[1], ARGV[2], ARGV[3]
local since, now = ARGV[5], ARGV[6]

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'deleting' then
  return {'deleting'}
end
local holder = redis.call('HGET', KEYS[1], 'user') or ''
local current = redis.call('HGET', KEYS[2], 'pod')
local retired = ''
if state == 'claimed' and holder == user and current == pod then
  return {'same'}
end
if holder ~= '' and holder ~= user then
  -- A claim the stale index made is still binding (its claimer met the record and
  -- failed): the owner takes the pod back. A bound one served its user: records
  -- never change hands, so that is no restore but a pod handed out twice or a
  -- record tampered with; not for this script (fleet/allocations.py ends it).
  local holder_claim = redis.call('HMGET', claim_key(holder), 'pod', 'binding')
  if holder_claim[1] == pod and holder_claim[2] ~= '1' then
    return {'bound', holder}
  end
end

if current and current ~= pod then
  local current_since = tonumber(redis.call('HGET', KEYS[2], 'since') or '0') or 0
  if current_since >= tonumber(ARGV[8]) then
    return {'holds', current}
  end
  -- The index's claim is older than the record's: a session whose end was lost.
  local other_key = pod_key(current)
  local other_profile = redis.call('HGET', other_key, 'profile') or profile
  for _, set in ipairs({warming_key(other_profile), ready_key(other_profile),
                        claimed_key(other_profile)}) do
    redis.call('ZREM', set, current)
  end
  if redis.call('EXISTS', other_key) == 1 then
    redis.call('HSET', other_key, 'state', 'deleting', 'ended_at', now, 'end_reason', 'superseded')
    redis.call('SADD', KEYS[7], current)
  end
  redis.call('DEL', KEYS[2])
  retired = current
  current = nil
end

if holder ~= '' and holder ~= user then
  local holder_claim = claim_key(holder)
  if redis.call('HGET', holder_claim, 'pod') == pod then
    leave_groups(holder, redis.call('HGET', holder_claim, 'groups'))
    redis.call('DEL', holder_claim)
    redis.call('ZREM', KEYS[6], holder)
  end
  publish(EVENT.release, profile, holder)
end

local addr = ARGV[4]
if addr == '' then
  addr = redis.call('HGET', KEYS[1], 'addr') or ''
end
redis.call('ZREM', KEYS[3], pod)
redis.call('ZREM', KEYS[4], pod)
redis.call('ZADD', KEYS[5], since, pod)
if not state then
  redis.call('HSET', KEYS[1], 'id', pod, 'created', ARGV[7])
end
redis.call('HSET', KEYS[1], 'profile', profile, 'state', 'claimed', 'user', user,
           'claimed_at', since, 'addr', addr)
if not current then
  -- Bound, as restore.lua writes it: nobody is binding it now, and a 'binding' claim
  -- would hold its user's requests for BIND_WAIT (fleet/service.py).
  redis.call('HSET', KEYS[2], 'pod', pod, 'profile', profile, 'addr', addr, 'since', since,
             'groups', ARGV[9])
  join_groups(user, ARGV[9])
end
-- Activity is unknown after a loss: count from now, never reclaim at once.
redis.call('ZADD', KEYS[6], 'NX', now, user)
publish(EVENT.claim, profile, user)
return {'reattached', holder == user and '' or holder, retired}
