-- _write_claim.lua: the claim-writing block of claim.lua and bind.lua, written once.
--
-- Not a script: fleet/scripts.py puts it where a script says `--@include _write_claim`.
-- write_claim(k, user, profile, pod, addr, since, now, queued_at) records that USER
-- holds POD, on the pod (k.pod) and in the user's claim (k.claim); the claim is
-- 'binding' until the claimer has recorded it on the pod's own record and pointed
-- its WebUI at the user's folder (bound.lua): nobody is sent to the pod before
-- that. It moves the pod into the profile's claimed set (scored by `since`), counts
-- the user active from `now`, takes them out of the queue (k.queue, k.seen) and
-- publishes `claim PROFILE USER`.
-- k: the keys {pod, claim, claimed, activity, queue, seen}, from the caller's KEYS
-- (claim.lua builds k.pod with pod_key: the pod is found inside the script).
-- Returns the reply of a new claim: {"new", field, value, ...} plus queued_at.
local function write_claim(k, user, profile, pod, addr, since, now, queued_at)
  redis.call('HSET', k.pod, 'state', 'claimed', 'user', user, 'claimed_at', since, 'addr', addr)
  redis.call('HSET', k.claim, 'pod', pod, 'profile', profile, 'addr', addr, 'since', since,
             'binding', '1')
  redis.call('ZADD', k.claimed, since, pod)
  redis.call('ZADD', k.activity, now, user)
  redis.call('ZREM', k.queue, user)
  redis.call('ZREM', k.seen, user)
  publish(EVENT.claim, profile, user)
  return {'new', 'pod', pod, 'profile', profile, 'addr', addr, 'since', since, 'queued_at', queued_at}
end
