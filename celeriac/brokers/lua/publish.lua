-- publish: store messages and make them ready (or delayed) in one step.
-- ARGV: P, then per message: id, queue, priority, eta (unix ms, '' for none), body.
-- Keys written: P:m:<id> (b, q, p, s; d and t appear at the first claim), P:seq, P:queues, P:ready:<q> or P:delayed:<q>, P:wake:<q>.
-- Idempotent per id: a retried publish (reply lost with the connection) stores nothing twice.
local now = now_ms()
local n = (#ARGV - 1) / 5
-- One INCRBY for the whole batch: its messages take consecutive sequence numbers.
local seq = redis.call('INCRBY', key('seq'), n) - n
local queues = {}
for i = 2, #ARGV, 5 do
  local id, q, p, eta, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  local m = key('m', id)
  seq = seq + 1
  if redis.call('HSETNX', m, 'b', body) == 1 then
    local s = (9 - p) * 1e13 + seq
    redis.call('HSET', m, 'q', q, 'p', p, 's', s)
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
