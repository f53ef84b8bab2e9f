-- stats: counts per queue. ARGV: P, queue...
-- Keys read: P:ready:<q>, P:delayed:<q>, P:retry:<q>, P:leased:<q>, P:dead:<q>, P:m:<id>
--       (e of the first message of each priority band), P:paused.
-- Returns {ready, scheduled, in_flight, dead, oldest, paused} per queue; due-but-not-moved
-- entries count as ready. oldest: unix ms since when the oldest ready message has waited
-- (-1: none): the earliest publish time among the first message of each priority band
-- (a band is in publish order) and the earliest due time of the delayed ones that came
-- due; 10 + 3 index look-ups, never a scan.
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local q = ARGV[i]
  local oldest = nil
  local function seen(t)
    if t and (oldest == nil or t < oldest) then oldest = t end
  end
  local due, scheduled = 0, 0
  for _, name in ipairs({'delayed', 'retry'}) do
    local k = key(name, q)
    due = due + redis.call('ZCOUNT', k, '-inf', now)
    scheduled = scheduled + redis.call('ZCARD', k)
    local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if first[2] and tonumber(first[2]) <= now then seen(tonumber(first[2])) end
  end
  local leased = key('leased', q)
  local expired = redis.call('ZCOUNT', leased, '-inf', now)
  local first = redis.call('ZRANGE', leased, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then seen(tonumber(first[2])) end
  local ready = key('ready', q)
  local count = redis.call('ZCARD', ready)
  if count > 0 then
    for p = 0, 9 do
      local band = redis.call('ZRANGEBYSCORE', ready, p * 1e13, '(' .. (p + 1) * 1e13, 'LIMIT', 0, 1)
      if band[1] then seen(tonumber(redis.call('HGET', key('m', band[1]), 'e'))) end
    end
  end
  out[#out + 1] = count + due + expired
  out[#out + 1] = scheduled - due
  out[#out + 1] = redis.call('ZCARD', leased) - expired
  out[#out + 1] = redis.call('ZCARD', key('dead', q))
  out[#out + 1] = oldest or -1
  out[#out + 1] = redis.call('SISMEMBER', key('paused'), q)
end
out[#out + 1] = now
return out
