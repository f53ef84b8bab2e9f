-- release: a worker process died; make everything it held ready again at once.
-- ARGV: P, consumer, group, n, then n ids of messages it had started (they keep their
-- charge; the others get their delivery back), then the ids of suspects (marked: x = group,
-- unless a smaller group is there already).
-- Keys: P:held:<consumer> (read, then deleted), P:m:<id>, P:leased:<q>, P:ready:<q>, P:wake:<q>.
-- Returns how many messages were released.
local consumer, group = ARGV[2], tonumber(ARGV[3])
local last_started = 4 + tonumber(ARGV[4])
local started, suspects = {}, {}
for i = 5, last_started do started[ARGV[i]] = true end
for i = last_started + 1, #ARGV do suspects[ARGV[i]] = true end
local released = 0
local woken = {}
for _, id in ipairs(redis.call('SMEMBERS', key('held', consumer))) do
  local m = key('m', id)
  local v = redis.call('HMGET', m, 'c', 'q', 'd', 'x')
  if v[1] == consumer then
    unclaim(id, m, v[2])
    if not started[id] and tonumber(v[3]) > 0 then redis.call('HINCRBY', m, 'd', -1) end
    if suspects[id] and not (v[4] and tonumber(v[4]) < group) then
      redis.call('HSET', m, 'x', group)
    end
    make_ready(id, m, v[2])
    woken[v[2]] = true
    released = released + 1
  end
end
redis.call('DEL', key('held', consumer))
for q in pairs(woken) do wake(q) end
return released
