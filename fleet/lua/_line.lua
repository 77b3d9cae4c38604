-- _line.lua: a profile's waiting line, two sorted sets of the same users kept in step.
--
-- Not a script: fleet/scripts.py puts it where a script says `--@include _line`.
-- queue:{profile} holds user -> join time (unix seconds): read as a join time by the wait
-- metric (queued_at on a new claim), the console and bind.lua. queue-order:{profile}
-- (fleet/keys.py queue_order) holds the same users scored by line_score(join time, priority):
-- the order the line is served in, priority first (higher first), then join time (earlier
-- first). A person's priority is fixed when they join (fleet/spec/groups.py priority_of).
--
-- Why join time - priority x 2^24 s: 2^24 s (194 days) is longer than anyone waits (a
-- place is kept only while its tab is seen, queue_grace), so the priorities never overlap;
-- priority 0 scores exactly the join time, so a line without priorities is served exactly
-- as before; and with |priority| <= 100 (fleet/spec/groups.py MAX_PRIORITY) a score stays
-- below 2^32 until about 2052, where a double (53 bits) resolves about 1 microsecond:
-- two joins closer than that may be served in either order (Redis: by user name).
-- Scores are written with '%.17g' (exact), never by Lua's own number-to-text ('%.14g').
--
-- line_score(joined, priority): the order score, as text.
-- join_line(queue, order, user, now, priority): put the user in line unless they are in it
--   (now: the join time as ARGV text; one already in `queue` keeps their join time); true
--   when they joined now.
-- leave_line(queue, seen, order, user): take the user out of all three sets.
-- mend_line(queue, order): make order hold exactly queue's users: an entry only in order
--   is dropped, a user only in queue (written by a broker that knows no order) is put in
--   at priority 0 by their join time. Returns how many entries it changed.
local PRIORITY_STEP = 16777216

local function line_score(joined, priority)
  return string.format('%.17g', joined - priority * PRIORITY_STEP)
end

local function join_line(queue, order, user, now, priority)
  local added = redis.call('ZADD', queue, 'NX', now, user) == 1
  local joined = tonumber(redis.call('ZSCORE', queue, user))
  redis.call('ZADD', order, 'NX', line_score(joined, priority), user)
  return added
end

local function leave_line(queue, seen, order, user)
  redis.call('ZREM', queue, user)
  redis.call('ZREM', seen, user)
  redis.call('ZREM', order, user)
end

local function mend_line(queue, order)
  local changed = 0
  for _, who in ipairs(redis.call('ZRANGE', order, 0, -1)) do
    if not redis.call('ZSCORE', queue, who) then
      redis.call('ZREM', order, who)
      changed = changed + 1
    end
  end
  local joined = redis.call('ZRANGE', queue, 0, -1, 'WITHSCORES')
  for i = 1, #joined, 2 do
    if not redis.call('ZSCORE', order, joined[i]) then
      redis.call('ZADD', order, line_score(tonumber(joined[i + 1]), 0), joined[i])
      changed = changed + 1
    end
  end
  return changed
end
