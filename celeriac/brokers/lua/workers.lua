-- workers: heartbeats and worker events, on the server clock.
-- ARGV: P, action, ...
--   beat   name, ttl_ms, info_json   P:workers[name] = info; P:workers:exp name -> now + ttl
--   forget name                      both removed
--   live                             the unexpired ones: {name, seen_ms|info, ...}
--   reap                             the expired ones, removed: {name, seen_ms|info, ...}
--   emit   kept, n, id               the n events the same transaction SET at P:events:b:<id>
--                                    (one JSON object per line, with a TTL in case this call
--                                    fails): seqs taken from P:events:seq with one INCRBY,
--                                    the batch indexed in P:events as "n|@id" scored by its
--                                    last seq, and kept (PERSIST); batches wholly older than
--                                    the newest `kept` events are removed with their keys. A
--                                    batch already indexed (a retried call) is left as it is
--   events after, limit, kept[, needle, upto]
--                                    {seq, json, ...}: up to `limit` events with seq > after,
--                                    oldest first, among the newest `kept`; with a needle,
--                                    only lines containing it (plain text), and none past
--                                    seq `upto`
--
-- A batch is one member, not a member per event: per event, a member cost the server
-- about 5 us (a string built here, a skiplist node, its removal when trimmed), a third
-- of what -E added to a no-op task. And the batch's bytes never pass through this
-- script when it is stored: a 166 KB batch as an argument cost the server 533 us (Lua
-- copies and collects every string it is handed or builds; the sorted set hashes its
-- members), against about 1 us for a SET of the same bytes. Members stored inline as
-- "first|json\njson..." by earlier versions are still read and trimmed.
local action = ARGV[2]

-- Remove the batches scored up to `upto` (their last seq), and the keys holding them.
local function drop_batches(upto)
  local old = redis.call('ZRANGEBYSCORE', key('events'), '-inf', upto)
  for i = 1, #old do
    local bar = string.find(old[i], '|', 1, true)
    if string.sub(old[i], bar + 1, bar + 1) == '@' then
      redis.call('DEL', key('events', 'b', string.sub(old[i], bar + 2)))
    end
  end
  redis.call('ZREMRANGEBYSCORE', key('events'), '-inf', upto)
end
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
  local blob = key('events', 'b', ARGV[5])
  local member = n .. '|@' .. ARGV[5]
  if redis.call('ZSCORE', key('events'), member) then
    redis.call('PERSIST', blob)  -- the retry's SET gave it a TTL again
    return 1
  end
  local last = redis.call('INCRBY', key('events', 'seq'), n)
  if kept <= 0 then
    drop_batches('+inf')
    redis.call('DEL', blob)
    return 1
  end
  redis.call('PERSIST', blob)
  redis.call('ZADD', key('events'), last, member)
  drop_batches(last - kept)
  return 1
elseif action == 'events' then
  local top = redis.call('ZREVRANGE', key('events'), 0, 0, 'WITHSCORES')
  if #top == 0 then
    return {}
  end
  local after = math.max(tonumber(ARGV[3]), tonumber(top[2]) - tonumber(ARGV[5]))
  local want = 2 * tonumber(ARGV[4])
  local needle = ARGV[6]
  if needle == '' then
    needle = nil
  end
  local upto = tonumber(ARGV[7] or '')
  local out = {}
  -- Pages of batches by score (a batch's last seq, unique), not by offset: an offset
  -- walks the skiplist from the start again on every page.
  local cursor = '(' .. after
  local done = false
  while #out < want and not done do
    local page = redis.call('ZRANGEBYSCORE', key('events'), cursor, '+inf', 'WITHSCORES',
                            'LIMIT', 0, 16)
    if #page == 0 then
      break
    end
    cursor = '(' .. page[#page]
    for i = 1, #page, 2 do
      local batch = page[i]
      local bar = string.find(batch, '|', 1, true)
      local seq, pos
      if string.sub(batch, bar + 1, bar + 1) == '@' then
        seq = tonumber(page[i + 1]) - tonumber(string.sub(batch, 1, bar - 1)) + 1
        batch = redis.call('GET', key('events', 'b', string.sub(batch, bar + 2))) or ''
        pos = 1
      else  -- stored inline by an earlier version
        seq = tonumber(string.sub(batch, 1, bar - 1))
        pos = bar + 1
      end
      if upto and seq > upto then
        done = true
        break
      end
      if needle and not string.find(batch, needle, pos, true) then
        pos = #batch + 1  -- none of its lines is wanted
      end
      while pos <= #batch and #out < want do
        local stop = string.find(batch, '\n', pos, true) or (#batch + 1)
        if upto and seq > upto then
          done = true
          break
        end
        if seq > after then
          local line = string.sub(batch, pos, stop - 1)
          if not needle or string.find(line, needle, 1, true) then
            out[#out + 1] = seq
            out[#out + 1] = line
          end
        end
        seq = seq + 1
        pos = stop + 1
      end
    end
  end
  return out
end
return redis.error_reply('unknown workers action ' .. action)
