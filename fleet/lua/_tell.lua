-- _tell.lua: what ending a user's session leaves behind, written once.
--
-- Not a script: fleet/scripts.py puts it where a script says `--@include _tell`
-- (end_pod.lua, drop_claim.lua). tell_ended(audit, tell, user, pod, profile,
-- reason, now, since, seen, groups, node) leaves USER the notice their next visit reads
-- (ended_key) and adds the audit entry, in the script that ends the claim: a
-- notice written a round trip later let an open tab's poll, between the two,
-- claim a new pod nobody had asked for (issue 17, item 3).
-- audit: the audit stream's key; tell: the caller's JSON {by, detail, ttl,
-- maxlen, limit_seconds} (fleet/notices.py, Tell); now: the caller's clock as
-- text; since: when the session began (0 = unknown); seen: the user's last
-- activity, read before the script removed it (nil = none); groups: the claim's (JSON
-- text, "" = unknown) and node: the pod's ("" = none or unknown), so that the entry
-- attributes the session's GPU time (fleet/usage.py sums session_seconds by both).
local function tell_ended(audit, tell, user, pod, profile, reason, now, since, seen, groups, node)
  local told = cjson.decode(tell)
  local at = tonumber(now)
  local last = tonumber(seen) or since
  local idle = (last > 0) and math.max(0, math.floor(at - last)) or 0
  local session = (since > 0) and math.max(0, math.floor(at - since)) or 0
  local notice = {reason = reason, idle_seconds = idle, session_seconds = session,
                  pod = pod, profile = profile, at = at}
  if told.limit_seconds then
    notice.limit_seconds = told.limit_seconds
  end
  redis.call('SET', ended_key(user), cjson.encode(notice), 'EX', told.ttl)
  local entry = {'user', user, 'pod', pod, 'profile', profile, 'reason', reason,
                 'idle_seconds', tostring(idle), 'session_seconds', tostring(session),
                 'at', now, 'by', told.by, 'groups', groups or '', 'node', node or ''}
  if told.detail and told.detail ~= '' then
    table.insert(entry, 'detail')
    table.insert(entry, told.detail)
  end
  redis.call('XADD', audit, 'MAXLEN', '~', told.maxlen, '*', unpack(entry))
end
