-- _write_claim.lua: the claim-writing block of claim.lua and bind.lua, written once.
--
-- Not a script: fleet/scripts.py puts it where a script says `--@include _write_claim`,
-- after `--@include _groups` (join_groups).
-- write_claim(k, user, profile, pod, addr, since, now, queued_at, groups) records that
-- USER holds POD, on the pod (k.pod) and in the user's claim (k.claim), with the user's
-- groups at claim time (JSON text, "" = unknown: each GPU-minute is attributed to them
-- when the session ends, _tell.lua); the claim is
-- 'binding' until the claimer has recorded it on the pod's own record and pointed
-- its WebUI at the user's folder (bound.lua): nobody is sent to the pod before
-- that. It moves the pod into the profile's claimed set (scored by `since`), counts
-- the user active from `now`, takes them out of the line (k.queue, k.seen, k.order) and
-- publishes `claim PROFILE USER`. The user joins the holders of each of their groups
-- (what a group's max_sessions counts: _groups.lua).
-- k: the keys {pod, claim, claimed, activity, queue, seen, order}, from the caller's KEYS
-- (claim.lua builds k.pod with pod_key: the pod is found inside the script).
-- Returns the reply of a new claim: {"new", field, value, ...} plus queued_at, and the
-- pod's node and GPU slot when known (for the session_start line; not kept on the claim).
local function write_claim(k, user, profile, pod, addr, since, now, queued_at, groups)
  redis.call('HSET', k.pod, 'state', 'claimed', 'user', user, 'claimed_at', since, 'addr', addr)
  redis.call('HSET', k.claim, 'pod', pod, 'profile', profile, 'addr', addr, 'since', since,
             'binding', '1', 'groups', groups)
  join_groups(user, groups)
  redis.call('ZADD', k.claimed, since, pod)
  redis.call('ZADD', k.activity, now, user)
  redis.call('ZREM', k.queue, user)
  redis.call('ZREM', k.seen, user)
  redis.call('ZREM', k.order, user)
  publish(EVENT.claim, profile, user)
  local node = redis.call('HGET', k.pod, 'node') or ''
  local slot = redis.call('HGET', k.pod, 'slot') or ''
  return {'new', 'pod', pod, 'profile', profile, 'addr', addr, 'since', since, 'groups', groups,
          'queued_at', queued_at, 'node', node, 'slot', slot}
end
