-- restore.lua: put pods the index lacks back into it, from the backend's records.
--
-- Atomic, so a FLUSHALL racing a rebuild can never leave the marker set over
-- a partial index: records whose pod key already exists are skipped, and the
-- marker is set in the same step as the pods it vouches for.
--
-- KEYS[1] state marker
-- KEYS[2] activity
-- ARGV[1] JSON array of records: {id, profile, state, addr, created, user, since, groups,
--         fields}; groups: the claim's groups as its record keeps them (JSON text, "" = none)
-- ARGV[2] now
-- ARGV[3] "1" to set the marker
-- Pods, claims and state sets are named by the prelude's key builders (fleet/scripts.py,
-- from fleet/keys.py).
-- A restored claim keeps its groups and its user joins each group's holders (_groups.lua),
-- so a group's max_sessions counts it after a rebuild as before.
-- Returns {restored, conflicts...}: conflicts are pod ids whose user already
-- holds another pod (the pod must then be ended, never given to anyone).
--@include _groups
local records = cjson.decode(ARGV[1])
local now = ARGV[2]
local restored = 0
local conflicts = {}
for _, rec in ipairs(records) do
  local pod_hash = pod_key(rec.id)
  if redis.call('EXISTS', pod_hash) == 0 then
    local state = rec.state
    if rec.user ~= '' then
      local claim = claim_key(rec.user)
      local holder = redis.call('HGET', claim, 'pod')
      if holder and holder ~= rec.id then
        state = 'conflict'
        conflicts[#conflicts + 1] = rec.id
      else
        redis.call('HSET', claim, 'pod', rec.id, 'profile', rec.profile, 'addr', rec.addr, 'since', rec.since,
          'groups', rec.groups or '')
        join_groups(rec.user, rec.groups)
        redis.call('ZADD', claimed_key(rec.profile), rec.since, rec.id)
        -- Activity is unknown after a loss: count from now, never reclaim at once.
        redis.call('ZADD', KEYS[2], 'NX', now, rec.user)
      end
    elseif state == 'ready' then
      redis.call('ZADD', ready_key(rec.profile), now, rec.id)
    else
      redis.call('ZADD', warming_key(rec.profile), rec.created, rec.id)
    end
    if state ~= 'conflict' then
      redis.call('HSET', pod_hash, 'id', rec.id, 'profile', rec.profile, 'state', state, 'addr', rec.addr,
        'created', rec.created)
      if rec.user ~= '' then
        redis.call('HSET', pod_hash, 'user', rec.user, 'claimed_at', rec.since)
      elseif state == 'ready' then
        redis.call('HSET', pod_hash, 'ready_at', now)
      end
      for field, value in pairs(rec.fields) do
        redis.call('HSET', pod_hash, field, value)
      end
      restored = restored + 1
    end
  end
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], now)
end
table.insert(conflicts, 1, restored)
return conflicts
