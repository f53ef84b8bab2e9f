-- admin: what a dashboard does to messages that wait (never to claimed ones).
-- ARGV: P, action, queue, limit, then ids; with no ids, the action takes the first
-- LIMIT entries of its sorted set (the caller repeats while a call returns LIMIT).
--   requeue  dead letters back to ready: P:dl:<id> renamed to P:m:<id> with a new
--            publish seq and time and no deliveries (d, t, x, reason, at dropped);
--            P:dead, P:dead:<q>, P:ready:<q>, P:queues, P:wake:<q>
--   delete:scheduled, delete:retries, delete:dead
--            P:m:<id> out of P:delayed:<q> / P:retry:<q>, or P:dl:<id> out of
--            P:dead:<q> and P:dead
--   now      scheduled messages and retries made ready: P:delayed:<q> or P:retry:<q>
--            to P:ready:<q> (their ready score: they come before later publishes)
-- Only ids that are in the action's sorted set of this queue act. Returns how many did.
local action, q, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local sources = {requeue = {key('dead', q)}, ['delete:scheduled'] = {key('delayed', q)},
                 ['delete:retries'] = {key('retry', q)}, ['delete:dead'] = {key('dead', q)},
                 now = {key('delayed', q), key('retry', q)}}
local zsets = sources[action]
if not zsets then return redis.error_reply('unknown admin action ' .. action) end
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', zsets[1], 0, limit - 1) end
local done = 0
for _, id in ipairs(ids) do
  for _, zset in ipairs(zsets) do
    if redis.call('ZREM', zset, id) == 1 then
      done = done + 1
      if action == 'requeue' and redis.call('EXISTS', key('dl', id)) == 0 then
        done = done - 1
      elseif action == 'requeue' then
        redis.call('ZREM', key('dead'), id)
        local m = key('m', id)
        redis.call('RENAME', key('dl', id), m)
        redis.call('HDEL', m, 'd', 't', 'x', 'c', 'r', 'reason', 'at')
        local p = tonumber(redis.call('HGET', m, 'p'))
        local s = (9 - p) * 1e13 + redis.call('INCR', key('seq'))
        redis.call('HSET', m, 's', s, 'e', now)
        redis.call('ZADD', key('ready', q), s, id)
      elseif action == 'delete:dead' then
        redis.call('ZREM', key('dead'), id)
        redis.call('DEL', key('dl', id))
      elseif action == 'now' then
        local m = key('m', id)
        if redis.call('EXISTS', m) == 1 then make_ready(id, m, q) end
      else
        redis.call('DEL', key('m', id))
      end
      break
    end
  end
end
if done > 0 and (action == 'requeue' or action == 'now') then
  redis.call('SADD', key('queues'), q)
  wake(q)
end
return done
