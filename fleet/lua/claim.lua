-- claim.lua: give a user their pod in ONE atomic step.
--
-- Returns the user's existing claim, or takes the oldest Ready pod of the
-- profile (the waiting line is honoured: priority, then first come, first served,
-- _line.lua) and records
-- the claim on the pod and the user, or reports that the user must wait.
-- Pods are single-use: a pod that ever had a user is never handed out again.
--
-- KEYS[1] state marker       (missing = index being rebuilt: claim nothing)
-- KEYS[2] claim:{user}
-- KEYS[3] ready:{profile}
-- KEYS[4] claimed:{profile}
-- KEYS[5] activity
-- KEYS[6] queue:{profile}
-- KEYS[7] queue-seen:{profile}
-- KEYS[8] ended:{user}         (the unread "your session ended" notice)
-- KEYS[9] queue-order:{profile} (the line's order: _line.lua)
-- KEYS[10] blocked (people an admin blocked: fleet/store/blocks.py): no NEW claim, and
--         the person leaves the line (a page waiting since before the block claims nothing)
-- ARGV[1] user
-- ARGV[2] profile
-- ARGV[3] now (unix seconds, float)
-- ARGV[4] queue grace (seconds): waiting users not seen for longer lose their place
-- ARGV[5] "1" to join the queue when no pod is free, "0" to only look
-- ARGV[6] "1" = reserve mode (backends that allocate themselves, Agones): when
--         the user may take a pod now, take none and answer {"go", queued_at};
--         the caller allocates and records the claim with bind.lua
-- ARGV[7] "1" = claim nothing NEW while the user has an unread ended notice (KEYS[8]):
--         a request that is not user activity (an idle tab polling) must not
--         start a new session; asked here so that it costs no Redis call of its own.
--         A user who already holds a claim (a newer session) is routed to it.
-- ARGV[8] optional: the user's groups, JSON text, kept on a new claim ("" = unknown)
-- ARGV[9] optional: JSON [[group, max_sessions], ...], the user's groups with a session limit
-- ARGV[10] optional: JSON [group, ...], the user's groups whose daily GPU budget is spent
--         (both from fleet.yaml's groups:, fleet/spec/groups.py; "" = none). A NEW claim
--         is refused, and the user leaves the queue, when one applies (_groups.lua):
--         refused, not queued behind the limit, since a limit can last for hours and
--         a person held in line for it would hold up everyone behind them.
-- ARGV[11] optional: the user's priority in the line (fleet/spec/groups.py priority_of;
--         "" = 0), used only when they join it: a person in line keeps their place.
--
-- Publishes (fleet/events.py) `claim PROFILE USER` for a new claim, `queue PROFILE USER`
-- when the user joins the queue. Pod keys come from the prelude's pod_key (fleet/scripts.py).
--
-- Returns one of
--   {"ended"}                            ARGV[7] is "1", the notice is unread, no claim
--   {"rebuilding"}
--   {"existing", field, value, ...}      the claim hash
--   {"new", field, value, ...}           the claim hash just written, plus queued_at
--                                        (when the user joined the queue; "" = never queued)
--   {"wait", position, queue_length}     1-based position in the line's order
--   {"go", queued_at}                    reserve mode: allocate now
--   {"limited", kind, group, limit, held}  a group limit applies (_groups.lua)
--   {"blocked"}                          KEYS[10] names the user: no new claim, out of line
--@include _groups
--@include _write_claim
--@include _line
local user, profile, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local grace = tonumber(ARGV[4])

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'rebuilding'}
end

local current = redis.call('HGETALL', KEYS[2])
if #current > 0 then
  table.insert(current, 1, 'existing')
  return current
end

-- The notice stops only a NEW claim: checked after the existing one (issue 17, item 8).
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[8]) == 1 then
  return {'ended'}
end

if redis.call('SISMEMBER', KEYS[10], user) == 1 then
  leave_line(KEYS[6], KEYS[7], KEYS[9], user)
  return {'blocked'}
end

local refused = group_refusal(user, ARGV[9], ARGV[10])
if refused then
  leave_line(KEYS[6], KEYS[7], KEYS[9], user)
  return refused
end

-- Forget waiting users who left (no sign of life within the grace period).
local gone = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. (now - grace))
for _, who in ipairs(gone) do
  if who ~= user then
    leave_line(KEYS[6], KEYS[7], KEYS[9], who)
  end
end
if redis.call('ZCARD', KEYS[6]) ~= redis.call('ZCARD', KEYS[9]) then
  mend_line(KEYS[6], KEYS[9])  -- a broker that knows no order queued someone
end

-- The n-th person in the line may take a pod only while fewer than n people
-- ahead of them could; a newcomer would go behind everyone of their priority or higher.
local priority = tonumber(ARGV[11]) or 0
local rank = redis.call('ZRANK', KEYS[9], user)
local ahead = rank
if not ahead then
  ahead = redis.call('ZCOUNT', KEYS[9], '-inf', line_score(now, priority))
end

local queued_at = redis.call('ZSCORE', KEYS[6], user) or ''
if ARGV[6] == '1' and ahead < redis.call('ZCARD', KEYS[3]) then
  return {'go', queued_at}
end
while ahead < redis.call('ZCARD', KEYS[3]) do
  local popped = redis.call('ZPOPMIN', KEYS[3])
  local pod = popped[1]
  local pod_hash = pod_key(pod)
  if redis.call('HGET', pod_hash, 'state') == 'ready' and redis.call('HEXISTS', pod_hash, 'user') == 0 then
    local addr = redis.call('HGET', pod_hash, 'addr') or ''
    local k = {pod = pod_hash, claim = KEYS[2], claimed = KEYS[4], activity = KEYS[5],
               queue = KEYS[6], seen = KEYS[7], order = KEYS[9]}
    return write_claim(k, user, profile, pod, addr, ARGV[3], now, queued_at, ARGV[8] or '')
  end
end

if ARGV[5] ~= '1' then
  return {'wait', 0, redis.call('ZCARD', KEYS[6])}
end
if not rank then
  join_line(KEYS[6], KEYS[9], user, ARGV[3], priority)
  rank = redis.call('ZRANK', KEYS[9], user)
  publish(EVENT.queue, profile, user)
end
redis.call('ZADD', KEYS[7], now, user)
return {'wait', rank + 1, redis.call('ZCARD', KEYS[9])}
