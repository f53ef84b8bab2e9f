-- publish: store messages and make them ready (or delayed) in one step.
-- ARGV: P, then per message: id, queue, priority, eta (unix ms, '' for none), body.
-- Keys written: P:m:<id>, P:seq, P:queues, P:ready:<q> or P:delayed:<q>, P:wake:<q>.
-- Idempotent per id: a retried publish (reply lost with the connection) stores nothing twice.
local now = now_ms()
local queues = {}
for i = 2, #ARGV, 5 do
  local id, q, p, eta, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  local m = key('m', id)
  if redis.call('EXISTS', m) == 0 then
    local s = (9 - p) * 1e13 + redis.call('INCR', key('seq'))
    redis.call('HSET', m, 'q', q, 'p', p, 's', s, 'b', body, 'd', 0, 't', 0)
    if eta ~= '' and tonumber(eta) > now then
      redis.call('ZADD', key('delayed', q), eta, id)
    else
      redis.call('ZADD', key('ready', q), s, id)
    end
    queues[q] = true
  end
end
for q in pairs(queues) do
  redis.call('SADD', key('queues'), q)
  wake(q)
end
return 1
