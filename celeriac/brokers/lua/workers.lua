-- workers: heartbeats and worker events, on the server clock.
-- ARGV: P, action, ...
--   beat   name, ttl_ms, info_json   P:workers[name] = info; P:workers:exp name -> now + ttl
--   forget name                      both removed
--   live                             the unexpired ones: {name, seen_ms|info, ...}
--   reap                             the expired ones, removed: {name, seen_ms|info, ...}
--   emit   kept, n, json\njson...   the n events (one argument, one JSON object per line)
--                                    stored in P:events as "seq|json", seqs taken from
--                                    P:events:seq with one INCRBY; only the newest `kept` kept
local action = ARGV[2]
local now = now_ms()
if action == 'beat' then
  redis.call('HSET', key('workers'), ARGV[3], now .. '|' .. ARGV[5])
  redis.call('ZADD', key('workers', 'exp'), now + tonumber(ARGV[4]), ARGV[3])
  return now
elseif action == 'forget' then
  redis.call('HDEL', key('workers'), ARGV[3])
  redis.call('ZREM', key('workers', 'exp'), ARGV[3])
  return 1
elseif action == 'live' or action == 'reap' then
  -- Expired records stay until a live node reaps them (and releases what they held).
  local names
  if action == 'live' then
    names = redis.call('ZRANGEBYSCORE', key('workers', 'exp'), '(' .. now, '+inf')
  else
    names = redis.call('ZRANGEBYSCORE', key('workers', 'exp'), '-inf', now)
  end
  local out = {}
  for _, name in ipairs(names) do
    local info = redis.call('HGET', key('workers'), name)
    if info then
      out[#out + 1] = name
      out[#out + 1] = info
    end
    if action == 'reap' then
      redis.call('HDEL', key('workers'), name)
      redis.call('ZREM', key('workers', 'exp'), name)
    end
  end
  return out
elseif action == 'emit' then
  local kept = tonumber(ARGV[3])
  local n = tonumber(ARGV[4])
  local seq = redis.call('INCRBY', key('events', 'seq'), n) - n
  local args = {}
  for line in string.gmatch(ARGV[5], '[^\n]+') do
    seq = seq + 1
    args[#args + 1] = seq
    args[#args + 1] = seq .. '|' .. line
    if #args >= 1000 then  -- unpack() has a limit on how many values it returns
      redis.call('ZADD', key('events'), unpack(args))
      args = {}
    end
  end
  if #args > 0 then
    redis.call('ZADD', key('events'), unpack(args))
  end
  if kept > 0 then
    redis.call('ZREMRANGEBYRANK', key('events'), 0, -(kept + 1))
  else
    redis.call('DEL', key('events'))
  end
  return 1
end
return redis.error_reply('unknown workers action ' .. action)
