-- stats: counts per queue. ARGV: P, queue...
-- Keys read: P:ready:<q>, P:delayed:<q>, P:leased:<q>, P:dead:<q>.
-- Returns {ready, scheduled, in_flight, dead} per queue; due-but-not-moved entries count as ready.
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local q = ARGV[i]
  local due = redis.call('ZCOUNT', key('delayed', q), '-inf', now)
  local expired = redis.call('ZCOUNT', key('leased', q), '-inf', now)
  out[#out + 1] = redis.call('ZCARD', key('ready', q)) + due + expired
  out[#out + 1] = redis.call('ZCARD', key('delayed', q)) - due
  out[#out + 1] = redis.call('ZCARD', key('leased', q)) - expired
  out[#out + 1] = redis.call('ZCARD', key('dead', q))
end
return out
