-- publish: store messages and make them ready (or delayed) in one step.
-- ARGV: P, receipt, receipt ttl (ms), again ('1' on a retry), then per message:
--       id, queue, priority, eta (unix ms, '' for none), retry ('1': a task's retry), body.
-- Keys written: P:m:<id> (b, q, p, s, e, r; d and t appear at the first claim), P:seq,
--       P:queues, P:ready:<q>, P:delayed:<q> or P:retry:<q>, P:wake:<q>,
--       P:sent:<receipt> (a short-lived receipt).
-- Safe to retry: a retry whose first try was applied (its reply was lost with the
-- connection) finds the receipt and stores nothing, even if a worker already ran and
-- acked the messages; HSETNX also skips any id that is still stored.
local receipt = key('sent', ARGV[2])
if ARGV[4] == '1' and redis.call('EXISTS', receipt) == 1 then return 0 end
local now = now_ms()
local n = (#ARGV - 4) / 6
-- One INCRBY for the whole batch: its messages take consecutive sequence numbers.
local seq = redis.call('INCRBY', key('seq'), n) - n
local queues = {}
for i = 5, #ARGV, 6 do
  local id, q, p, eta, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 5]
  local m = key('m', id)
  seq = seq + 1
  if redis.call('HSETNX', m, 'b', body) == 1 then
    local s = (9 - p) * 1e13 + seq
    redis.call('HSET', m, 'q', q, 'p', p, 's', s, 'e', now)
    if eta ~= '' and tonumber(eta) > now then
      if ARGV[i + 4] == '1' then
        redis.call('HSET', m, 'r', '1')
        redis.call('ZADD', key('retry', q), eta, id)
      else
        redis.call('ZADD', key('delayed', q), eta, id)
      end
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
redis.call('SET', receipt, '1', 'PX', ARGV[3])
return 1
