-- strike.lua: count one more unanswered busy probe of a pod, if the pod still exists.
--
-- The count lives in the pod's hash so it disappears with the pod; HINCRBY
-- alone would re-create the hash of a pod deleted meanwhile.
--
-- KEYS[1] pod:{id}
-- ARGV[1] field name
-- Returns the new count, or -1 when the pod record is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
