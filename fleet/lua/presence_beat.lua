-- presence_beat.lua: one broker process's open tab connections, rewritten whole.
--
-- Each broker process counts the tab connections it holds (broker/presence.py) and
-- calls this every beat: its hash is replaced, its expiry pushed on, and users whose
-- last connection there closed since the last beat are stamped in the gone set. A
-- killed process stops beating; the reaper's gone_candidates.lua then treats its
-- users as gone from its expiry (fleet/store/presence.py).
--
-- KEYS[1] presence-procs (sorted set process -> unix time its counts expire)
-- KEYS[2] presence:{process} (hash user -> tab connections open there)
-- KEYS[3] gone (sorted set user -> when their last tab connection closed)
-- ARGV[1] process id
-- ARGV[2] when these counts expire (unix seconds); "" = the process is leaving
-- ARGV[3] seconds the hash is kept at most (a backstop: the reaper removes it first)
-- ARGV[4] n: (user, open connections) pairs that follow, each count > 0
-- ARGV[5 .. 4+2n] user, open connections
-- ARGV[5+2n ..] (user, when their last connection here closed) pairs
-- Returns the number of users with a tab open on this process.
local n = tonumber(ARGV[4])
redis.call('DEL', KEYS[2])
local closed_at = 5 + 2 * n
for i = closed_at, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], 'GT', ARGV[i + 1], ARGV[i])
end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
if n > 0 then
  local pairs_ = {}
  local open = {}
  for i = 5, closed_at - 1, 2 do
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
    open[#open + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[2], unpack(pairs_))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], unpack(open))
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return n
