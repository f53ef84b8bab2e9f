-- release: a worker process died; make everything it held ready again at once.
-- ARGV: P, consumer, n, then n ids of messages it had started (they keep their charge;
-- the others get their delivery back), then the ids of suspects (marked: x = '1').
-- Keys: P:held:<consumer> (read, then deleted), P:m:<id>, P:leased:<q>, P:ready:<q>, P:wake:<q>.
-- Returns how many messages were released.
local consumer = ARGV[2]
local last_started = 3 + tonumber(ARGV[3])
local started, suspects = {}, {}
for i = 4, last_started do started[ARGV[i]] = true end
for i = last_started + 1, #ARGV do suspects[ARGV[i]] = true end
local released = 0
local woken = {}
for _, id in ipairs(redis.call('SMEMBERS', key('held', consumer))) do
  local m = key('m', id)
  local v = redis.call('HMGET', m, 'c', 'q', 'd')
  if v[1] == consumer then
    unclaim(id, m, v[2])
    if not started[id] and tonumber(v[3]) > 0 then redis.call('HINCRBY', m, 'd', -1) end
    if suspects[id] then redis.call('HSET', m, 'x', '1') end
    make_ready(id, m, v[2])
    woken[v[2]] = true
    released = released + 1
  end
end
redis.call('DEL', key('held', consumer))
for q in pairs(woken) do wake(q) end
return released
