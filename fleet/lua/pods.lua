-- pods.lua: many pods' hashes in one call, as one JSON text.
--
-- A controller pass reads every pod. As nested replies that is about twenty
-- values per pod for the client to parse one by one (in Python, most of a
-- pass at a few hundred pods); one JSON text is parsed in C. Read-only: the
-- caller sends a bounded number of ids per call so Redis is never held long.
--
-- ARGV[1..] pod ids (their keys: the prelude's pod_key, fleet/scripts.py)
-- Returns a JSON array of objects (field -> value), one per pod that has a
-- hash with an id; "[]" when none.
local out = {}
for i = 1, #ARGV do
  local flat = redis.call('HGETALL', pod_key(ARGV[i]))
  local pod = {}
  for j = 1, #flat, 2 do
    pod[flat[j]] = flat[j + 1]
  end
  if pod['id'] then
    out[#out + 1] = pod
  end
end
if #out == 0 then
  return '[]'
end
return cjson.encode(out)
