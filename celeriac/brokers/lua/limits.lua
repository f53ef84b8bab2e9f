-- limits: cluster-wide rate and concurrency limits (the sums of celeriac/brokers/limits.py).
-- Keys (under P, see prelude.lua):
--   P:rl:<task>            string  GCRA theoretical arrival time of the task's next run (ms)
--   P:rl:t:<task>:<ticket> string  the time (ms) reserved for a deferred message; expires
--                                  TICKET_GRACE after it
--   P:cl:<task>            zset    holder -> slot expiry (ms): the task's running slots
--   P:rl:overrides         hash    task -> rate limit set at run time (control rate_limit)
-- ARGV: P, action, ...
--   token    task, interval (ms), tolerance (ms), ticket, early (ms), grace (ms)
--            returns "0" (run now) or the ms until the reserved time, as a string
--   acquire  task, limit, holder, ttl (ms)           returns 1 (slot taken) or 0
--   renew    ttl (ms), then task, holder pairs       returns 1
--   release  task, holder                             returns 1
--   count    task                                     returns the unexpired slots
-- Times are the server's clock, so workers' clocks never matter.
local action = ARGV[2]
local now = now_ms()

if action == 'token' then
  local task, interval, tolerance = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local ticket_key = key('rl', 't', task, ARGV[6])
  local reserved = redis.call('GET', ticket_key)
  if reserved then
    local left = tonumber(reserved) - now
    if left <= tonumber(ARGV[7]) then
      redis.call('DEL', ticket_key)
      return '0'
    end
    return string.format('%.3f', left)
  end
  local tat_key = key('rl', task)
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat < now then tat = now end
  local delay = tat - tolerance - now
  if delay < 0 then delay = 0 end
  local new_tat = tat + interval
  redis.call('SET', tat_key, string.format('%.3f', new_tat),
             'PX', math.ceil(new_tat - now + 60000))
  if delay > 0 then
    redis.call('SET', ticket_key, string.format('%.3f', now + delay),
               'PX', math.ceil(delay + tonumber(ARGV[8])))
  end
  return string.format('%.3f', delay)
elseif action == 'acquire' then
  local slots = key('cl', ARGV[3])
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local holder = ARGV[5]
  if not redis.call('ZSCORE', slots, holder) and
      redis.call('ZCARD', slots) >= tonumber(ARGV[4]) then
    return 0
  end
  local expires = now + tonumber(ARGV[6])
  redis.call('ZADD', slots, expires, holder)
  redis.call('PEXPIREAT', slots, expires + 60000)
  return 1
elseif action == 'renew' then
  local expires = now + tonumber(ARGV[3])
  for i = 4, #ARGV, 2 do
    local slots = key('cl', ARGV[i])
    if redis.call('ZADD', slots, 'XX', 'CH', expires, ARGV[i + 1]) == 1 then
      redis.call('PEXPIREAT', slots, expires + 60000)
    end
  end
  return 1
elseif action == 'release' then
  redis.call('ZREM', key('cl', ARGV[3]), ARGV[4])
  return 1
elseif action == 'count' then
  return redis.call('ZCOUNT', key('cl', ARGV[3]), '(' .. now, '+inf')
end
return redis.error_reply('limits: unknown action ' .. tostring(action))
