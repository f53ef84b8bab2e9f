-- settle: what a consumer does with messages it holds: ack, renew, requeue or dead-letter.
-- ARGV: P, action, param1, param2, the number of pairs and the pairs as one argument,
-- "id token id token ..." (ids are hex, tokens digits: RedisBroker._settle; one argument
-- instead of two a message costs the client less to send). Only a pair whose token is still
-- the message's current one (and which is still claimed) acts: fencing against a worker
-- that froze past its lease while another one took the message over.
--   ack     -  again         P:m:<id> deleted (again = '1' on a retry: a message already
--                            gone counts as acked); P:leased:<q>, P:held:<c> entries removed
--   renew   lease_ms         P:leased:<q> score = now + lease
--   requeue delay_ms uncharge  back to P:ready:<q> (or P:delayed:<q> / P:retry:<q> if delay > 0);
--                            uncharge = 1 takes this delivery off P:m:<id> d; P:wake:<q>
--                            (the suspect mark x stays: only ack and dead remove it)
--   dead    reason           moved to P:dl:<id>, P:dead, P:dead:<q>
-- Returns a string of one '1' (done) or '0' (stale token) per pair.
local action, a, b = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local out = {}
local woken = {}
for id, token in string.gmatch(ARGV[6], '(%S+) (%S+)') do
  local m, q, c = held(id, token)
  if m then
    if action == 'ack' then
      -- unclaim() without reading the holder again or clearing it from a hash that goes.
      redis.call('SREM', key('held', c), id)
      redis.call('ZREM', key('leased', q), id)
      redis.call('DEL', m)
    elseif action == 'renew' then
      redis.call('ZADD', key('leased', q), now + tonumber(a), id)
    elseif action == 'requeue' then
      unclaim(id, m, q)
      if b == '1' and tonumber(redis.call('HGET', m, 'd')) > 0 then
        redis.call('HINCRBY', m, 'd', -1)
      end
      if tonumber(a) > 0 then
        redis.call('ZADD', delayed_key(m, q), now + tonumber(a), id)
      else
        make_ready(id, m, q)
      end
      woken[q] = true
    elseif action == 'dead' then
      bury(id, m, q, a, now)
    else
      return redis.error_reply('unknown settle action ' .. action)
    end
    out[#out + 1] = '1'
  elseif action == 'ack' and b == '1' and redis.call('EXISTS', key('m', id)) == 0 then
    -- A retried ack (b = '1') whose first try was applied but whose reply was lost.
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
for q in pairs(woken) do wake(q) end
if #out ~= tonumber(ARGV[5]) then
  return redis.error_reply('settle: ' .. #out .. ' pairs read of ' .. ARGV[5])
end
return table.concat(out)
