-- limits: cluster-wide rate and concurrency limits (the sums of celeriac/brokers/limits.py).
-- Keys (under P, see prelude.lua):
--   P:rl:<task>            hash    t: GCRA theoretical arrival time of the task's next run,
--                                  l: its latest grant (ms); expires a minute after t
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

local function ms(x)
  return string.format('%.3f', x)
end

if action == 'token' then
  -- celeriac.brokers.limits.decide, in ms.
  local task, interval, tolerance = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local slack = math.min(tonumber(ARGV[7]), interval / 20)
  local state_key = key('rl', task)
  local state = redis.call('HMGET', state_key, 't', 'l')
  local tat, last = tonumber(state[1]), tonumber(state[2])
  local function keep(new_tat, new_last)
    redis.call('HSET', state_key, 't', ms(new_tat))
    if new_last then redis.call('HSET', state_key, 'l', ms(new_last)) end
    redis.call('PEXPIRE', state_key, math.ceil(new_tat - now + 60000))
  end
  local spacing = nil
  if tolerance == 0 and last then spacing = last + interval - slack end
  local ticket_key = key('rl', 't', task, ARGV[6])
  local reserved = tonumber(redis.call('GET', ticket_key))
  if reserved then
    if reserved - now > slack then return ms(reserved - now) end
    if spacing and now < spacing then return ms(spacing + slack - now) end
    redis.call('DEL', ticket_key)
    keep(tat or now, now)
    return '0'
  end
  local start = now
  if tat and tat > now then start = tat end
  if spacing and start < spacing + slack then start = spacing + slack end
  local delay = start - tolerance - now
  if delay <= slack then
    keep(math.max(start, now) + interval, now)
    return '0'
  end
  keep(start + interval, nil)
  redis.call('SET', ticket_key, ms(now + delay), 'PX', math.ceil(delay + tonumber(ARGV[8])))
  return ms(delay)
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
