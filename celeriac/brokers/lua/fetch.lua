-- fetch: claim up to COUNT messages across queues, highest priority first, then oldest.
-- ARGV: P, count, consumer, lease (ms), max_deliveries, queue...
-- Keys: P:delayed:<q>, P:retry:<q> and P:leased:<q> (due entries move to P:ready:<q>), P:ready:<q>,
--       P:m:<id> (d and t incremented, c set, x read), P:leased:<q>, P:held:<consumer>,
--       P:dl:<id>, P:dead, P:dead:<q> (messages out of deliveries).
-- Returns {wait_ms, suspects, message, message, ...}; wait_ms is how long until
-- something in these queues comes due (-1: nothing scheduled), 0 if claimed; suspects lists
-- the claimed ids marked suspect, each followed by its group (x), nearly always empty: one
-- empty array costs the reply less than a field per message. A message is
-- "deliveries token priority #id #queue id..queue..body": one string, not six items,
-- because the client parses each item of a reply in Python (five cost it about as much
-- as the rest of a no-op task's fetch; a head and a body, a microsecond more a message
-- than one).
local count, consumer = tonumber(ARGV[2]), ARGV[3]
local lease, maxd = tonumber(ARGV[4]), tonumber(ARGV[5])
local queues = {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end
local now = now_ms()

for _, q in ipairs(queues) do
  for _, zset in ipairs({key('delayed', q), key('retry', q)}) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', zset, id)
      local m = key('m', id)
      if redis.call('EXISTS', m) == 1 then make_ready(id, m, q) end
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key('leased', q), '-inf', now, 'LIMIT', 0, 1000)) do
    local m = key('m', id)
    unclaim(id, m, q)
    if redis.call('EXISTS', m) == 1 then make_ready(id, m, q) end
  end
end

local suspects = {}
local out = {0, suspects}
local claimed = 0
while claimed < count do
  local want = count - claimed
  local candidates = {}
  -- Every queue gave fewer than asked: nothing is left to look at after this round.
  local exhausted = true
  for _, q in ipairs(queues) do
    local r = redis.call('ZRANGE', key('ready', q), 0, want - 1, 'WITHSCORES')
    for j = 1, #r, 2 do candidates[#candidates + 1] = {tonumber(r[j + 1]), r[j], q} end
    if #r >= 2 * want then exhausted = false end
  end
  if #candidates == 0 then break end
  table.sort(candidates, function(a, b) return a[1] < b[1] end)
  for j = 1, math.min(#candidates, want) do
    local id, q = candidates[j][2], candidates[j][3]
    redis.call('ZREM', key('ready', q), id)
    local m = key('m', id)
    local f = redis.call('HMGET', m, 'd', 'b', 'p', 'x', 't')
    if f[2] then
      if tonumber(f[1] or 0) >= maxd then
        -- The same text as celeriac.brokers.base.max_deliveries_reason.
        local reason = 'max deliveries (' .. maxd .. ') exceeded'
        if f[4] == '1' then reason = reason .. '; it crashed its worker process while running alone' end
        bury(id, m, q, reason, now)
      else
        -- One write for the count, the token and the holder: each call costs.
        local d, t = tonumber(f[1] or 0) + 1, tonumber(f[5] or 0) + 1
        redis.call('HSET', m, 'd', d, 't', t, 'c', consumer)
        redis.call('ZADD', key('leased', q), now + lease, id)
        redis.call('SADD', key('held', consumer), id)
        out[#out + 1] = d .. ' ' .. t .. ' ' .. (f[3] or 0) .. ' ' .. #id .. ' ' .. #q .. ' '
                        .. id .. q .. f[2]
        if f[4] then
          suspects[#suspects + 1] = id
          suspects[#suspects + 1] = tonumber(f[4])
        end
        claimed = claimed + 1
      end
    end
  end
  if exhausted then break end
end

if claimed == 0 then
  local due = nil
  for _, q in ipairs(queues) do
    for _, name in ipairs({'delayed', 'retry', 'leased'}) do
      local first = redis.call('ZRANGE', key(name, q), 0, 0, 'WITHSCORES')
      if first[2] and (due == nil or tonumber(first[2]) < due) then due = tonumber(first[2]) end
    end
  end
  if due == nil then out[1] = -1 else out[1] = math.max(due - now, 1) end
end
return out
