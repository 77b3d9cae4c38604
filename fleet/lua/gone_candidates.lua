-- gone_candidates.lua: sessions whose user has had no tab open since a cutoff.
--
-- First, broker processes whose counts expired (killed: they stopped beating) are
-- swept: each user they counted is gone from that expiry, and their hash is removed.
-- Then the gone set is read up to the widest cutoff. An entry is dropped (not
-- returned) when the user has a tab open on a live process, has no claim, or closed
-- their last tab before their current session began (an earlier session's entry).
-- Entries of profiles without a cutoff stay for a later cycle (a reload may give one).
-- Read-mostly: ending is the caller's (end_pod, with its activity guard).
--
-- KEYS[1] presence-procs (sorted set process -> unix time its counts expire)
-- KEYS[2] gone (sorted set user -> when their last tab connection closed)
-- KEYS[3] activity
-- KEYS[4] busy (hash user -> pod)
-- ARGV[1] now (unix seconds)
-- ARGV[2] at most this many candidates
-- ARGV[3..] (profile, cutoff) pairs: that profile's users gone at or before cutoff
-- The presence hashes, claims and pods are named by the prelude's presence_key,
-- claim_key and pod_key (fleet/scripts.py).
-- Returns 13 values per session, flat: when the user's last tab closed, then the 12
-- values of a reap_candidates.lua entry with kind "gone".
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local cutoffs = {}
local widest = nil
for i = 3, #ARGV, 2 do
  local c = tonumber(ARGV[i + 1])
  cutoffs[ARGV[i]] = c
  if widest == nil or c > widest then widest = c end
end

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
for i = 1, #dead, 2 do
  local users = redis.call('HKEYS', presence_key(dead[i]))
  for _, user in ipairs(users) do
    redis.call('ZADD', KEYS[2], 'GT', dead[i + 1], user)
  end
  redis.call('DEL', presence_key(dead[i]))
  redis.call('ZREM', KEYS[1], dead[i])
end

-- A day-old entry is forgotten: that user counts as present again, which only ever
-- leaves a session to the idle timeout (the gone set stays as small as a day's users).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(now) - 86400))
local out = {}
if widest == nil then return out end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', widest, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #gone, 2 do
  local user, since = gone[i], tonumber(gone[i + 1])
  local open = 0
  for _, process in ipairs(live) do
    open = open + tonumber(redis.call('HGET', presence_key(process), user) or '0')
  end
  local claim = redis.call('HMGET', claim_key(user), 'pod', 'profile', 'since')
  local pod = claim[1] or ''
  if open > 0 or pod == '' or since < tonumber(claim[3] or '0') then
    redis.call('ZREM', KEYS[2], user)
  elseif cutoffs[claim[2]] ~= nil and since <= cutoffs[claim[2]] then
    local info = redis.call('HMGET', pod_key(pod), 'state', 'user', 'addr', 'claimed_at',
                            'reap_strikes')
    local entry = {gone[i + 1], 'gone', user, redis.call('ZSCORE', KEYS[3], user) or '', pod,
                   claim[2] or '', claim[3] or '', info[1] or '', info[2] or '', info[3] or '',
                   info[4] or '', info[5] or '0', redis.call('HGET', KEYS[4], user) or ''}
    for _, v in ipairs(entry) do out[#out + 1] = v end
  end
end
return out
