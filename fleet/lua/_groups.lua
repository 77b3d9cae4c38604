-- _groups.lua: the group limits of fleet.yaml's `groups:` (fleet/spec/groups.py), in Lua.
--
-- Not a script: fleet/scripts.py puts it where a script says `--@include _groups`.
-- Each group has a set of the users holding a claim who were in it when they claimed
-- (the prelude's group_holders_key, from fleet/keys.py). A claim's `groups` field is
-- JSON text ("" = unknown), as fleet/model.py groups_text writes it.
--
-- group_names(text): the claim's groups field as a Lua list ({} for "" or anything odd).
-- join_groups(user, text) / leave_groups(user, text): add / remove the user in the set of
--   each group of a claim's groups field (_write_claim.lua; end_pod.lua, drop_claim.lua).
-- group_refusal(user, limits, spent): why a NEW claim for `user` is refused, or nil.
--   limits: JSON [[group, max_sessions], ...] of the user's limited groups (ARGV);
--   spent: JSON [group, ...] of the user's groups whose daily GPU budget is used up.
--   Returns {"limited", "sessions", group, max_sessions, holders} or
--   {"limited", "budget", group, "", ""}. A member whose claim is gone (a claim deleted
--   by a path that did not leave the set) is dropped from the set when counted, so a
--   stale member never holds a place: only a full set is looked at member by member.
local function group_names(text)
  if not text or text == '' then
    return {}
  end
  local ok, names = pcall(cjson.decode, text)
  if not ok or type(names) ~= 'table' then
    return {}
  end
  local out = {}
  for _, name in ipairs(names) do
    if type(name) == 'string' then
      table.insert(out, name)
    end
  end
  return out
end

local function join_groups(user, text)
  for _, name in ipairs(group_names(text)) do
    redis.call('SADD', group_holders_key(name), user)
  end
end

local function leave_groups(user, text)
  for _, name in ipairs(group_names(text)) do
    redis.call('SREM', group_holders_key(name), user)
  end
end

local function group_refusal(user, limits, spent)
  for _, name in ipairs(group_names(spent)) do
    return {'limited', 'budget', name, '', ''}
  end
  if not limits or limits == '' then
    return nil
  end
  for _, pair in ipairs(cjson.decode(limits)) do
    local name, most = pair[1], tonumber(pair[2])
    local set = group_holders_key(name)
    local held = redis.call('SCARD', set)
    if held >= most then
      for _, who in ipairs(redis.call('SMEMBERS', set)) do
        if redis.call('EXISTS', claim_key(who)) == 0 then
          redis.call('SREM', set, who)
        end
      end
      held = redis.call('SCARD', set)
    end
    if held >= most and redis.call('SISMEMBER', set, user) == 0 then
      return {'limited', 'sessions', name, most, held}
    end
  end
  return nil
end
