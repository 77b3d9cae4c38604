-- reap_candidates.lua: the sessions one reclaim cycle must look at, read in one call.
--
-- Idle sessions come from the activity sorted set (up to the idle cutoff),
-- expired ones from each profile's claimed set (scored by claim time), so a
-- cycle over N sessions with k candidates touches O(k) keys, never all N.
-- Sessions the reaper last found generating (the busy hash) come every cycle,
-- as kind "busy" unless already idle or expired, so the end of a generation is
-- seen within one cycle (reaper/cycle.py). The busy hash is as small as the
-- number of GPUs busy at once.
-- Read-only: deciding and ending is the caller's (end_pod, drop_claim).
--
-- KEYS[1] activity
-- KEYS[2] busy (hash user -> pod)
-- KEYS[3..] claimed:{profile} of every profile whose sessions have a max length
-- ARGV[1] idle cutoff: last activity at or before this is idle
-- ARGV[2] session cutoff: claims made at or before this are expired ("" = no max_session)
-- ARGV[3] at most this many candidates of each kind (oldest first)
-- ARGV[4..] optional: the session cutoff of KEYS[3..] one by one (max_session per profile),
--           in place of ARGV[2] for that key
-- Claims and pods are named by the prelude's claim_key and pod_key (fleet/scripts.py).
-- Returns {sessions, entry...}: sessions = ZCARD activity, then 12 values per entry:
--   kind ("idle"|"expired"|"busy"), user, last activity ("" = none), claim pod ("" = no claim),
--   claim profile, claim since, pod state ("" = no pod record), pod user, pod addr,
--   pod claimed_at, probe strikes, pod the busy hash names for the user ("" = none)
local limit = tonumber(ARGV[3])
local out = {redis.call('ZCARD', KEYS[1])}
local seen = {}

local function add(kind, user, last)
  local claim = redis.call('HMGET', claim_key(user), 'pod', 'profile', 'since')
  local pod = claim[1] or ''
  local info = {false, false, false, false, false}
  if pod ~= '' then
    info = redis.call('HMGET', pod_key(pod), 'state', 'user', 'addr', 'claimed_at', 'reap_strikes')
  end
  local entry = {kind, user, last or '', pod, claim[2] or '', claim[3] or '',
                 info[1] or '', info[2] or '', info[3] or '', info[4] or '', info[5] or '0',
                 redis.call('HGET', KEYS[2], user) or ''}
  for _, v in ipairs(entry) do out[#out + 1] = v end
  seen[user] = true
end

for i = 3, #KEYS do
  local cutoff = ARGV[i + 1] or ARGV[2]
  if cutoff ~= '' then
    local pods = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', cutoff, 'LIMIT', 0, limit)
    for _, pod in ipairs(pods) do
      local user = redis.call('HGET', pod_key(pod), 'user')
      if user and user ~= '' and not seen[user] then
        add('expired', user, redis.call('ZSCORE', KEYS[1], user))
      end
    end
  end
end

local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #idle, 2 do
  if not seen[idle[i]] then
    add('idle', idle[i], idle[i + 1])
  end
end

local busy = redis.call('HKEYS', KEYS[2])
for _, user in ipairs(busy) do
  if not seen[user] then
    add('busy', user, redis.call('ZSCORE', KEYS[1], user))
  end
end
return out
