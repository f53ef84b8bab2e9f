-- publish: store messages and make them ready (or delayed) in one step.
-- ARGV: P, receipt, receipt ttl (ms), again ('1' on a retry), then per message:
--       id, queue, priority, eta (unix ms, '' for none), retry ('1': a task's retry), body.
-- Keys written: P:m:<id> (b, q, p, s, e, r; d and t appear at the first claim), P:seq,
--       P:queues, P:ready:<q>, P:delayed:<q> or P:retry:<q>, P:wake:<q>,
--       P:sent:<receipt> (a short-lived receipt).
-- Safe to retry: a retry whose first try was applied (its reply was lost with the
-- connection) finds the receipt and stores nothing, even if a worker already ran and
-- acked the messages; a retry also skips any id that is still stored. A first try
-- does not look: its ids are new (celeriac/brokers/ids.py), so it spends one HSET per
-- message and one ZADD per queue, not a call per field.
local receipt = key('sent', ARGV[2])
local again = ARGV[4] == '1'
if again and redis.call('EXISTS', receipt) == 1 then return 0 end
local now = now_ms()
local n = (#ARGV - 4) / 6
-- One INCRBY for the whole batch: its messages take consecutive sequence numbers.
local seq = redis.call('INCRBY', key('seq'), n) - n
local mkey = P .. ':m:'
local ready = {}  -- queue -> {score, id, score, id, ...}: one ZADD per queue
for i = 5, #ARGV, 6 do
  local id, q, p, eta, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 5]
  local m = mkey .. id
  seq = seq + 1
  if not again or redis.call('EXISTS', m) == 0 then
    local s = (9 - p) * 1e13 + seq
    local due = eta ~= '' and tonumber(eta) > now
    local retry = due and ARGV[i + 4] == '1'
    if retry then
      redis.call('HSET', m, 'b', body, 'q', q, 'p', p, 's', s, 'e', now, 'r', '1')
    else
      redis.call('HSET', m, 'b', body, 'q', q, 'p', p, 's', s, 'e', now)
    end
    local pairs_of = ready[q] or {}
    ready[q] = pairs_of
    if retry then
      redis.call('ZADD', key('retry', q), eta, id)
    elseif due then
      redis.call('ZADD', key('delayed', q), eta, id)
    else
      pairs_of[#pairs_of + 1] = s
      pairs_of[#pairs_of + 1] = id
    end
  end
end
for q, pairs_of in pairs(ready) do
  -- unpack is bounded by Lua's C stack: at most 4,000 arguments a call.
  for j = 1, #pairs_of, 4000 do
    redis.call('ZADD', key('ready', q), unpack(pairs_of, j, math.min(j + 3999, #pairs_of)))
  end
  redis.call('SADD', key('queues'), q)
  wake(q)
end
redis.call('SET', receipt, '1', 'PX', ARGV[3])
return 1
