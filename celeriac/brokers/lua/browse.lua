-- browse: one page of a queue's ready, scheduled, retrying or dead messages (dashboards).
-- ARGV: P, queue, kind ('ready', 'scheduled', 'retries' or 'dead'), offset, limit.
-- Keys read: P:ready:<q> (claim order), P:delayed:<q> or P:retry:<q> (due first),
--       P:dead:<q> (newest first), and P:m:<id> or P:dl:<id> of the page's messages.
-- Ranks in a sorted set are found in O(log n), so a page costs O(log n + limit).
-- Returns {total, id, body, published ms, due ms, deliveries, reason, failed ms, id, ...},
-- '' for a field a message does not have; a message gone meanwhile is left out.
local q, kind = ARGV[2], ARGV[3]
local first, last = tonumber(ARGV[4]), tonumber(ARGV[4]) + tonumber(ARGV[5]) - 1
local zsets = {ready = key('ready', q), scheduled = key('delayed', q), retries = key('retry', q),
               dead = key('dead', q)}
local zset = zsets[kind]
if not zset then return redis.error_reply('unknown listing ' .. kind) end
local out = {redis.call('ZCARD', zset)}
if last < first then return out end
local entries
if kind == 'dead' then
  entries = redis.call('ZREVRANGE', zset, first, last, 'WITHSCORES')
else
  entries = redis.call('ZRANGE', zset, first, last, 'WITHSCORES')
end
for j = 1, #entries, 2 do
  local id = entries[j]
  local f
  if kind == 'dead' then
    f = redis.call('HMGET', key('dl', id), 'b', 'e', 'd', 'reason', 'at')
  else
    f = redis.call('HMGET', key('m', id), 'b', 'e', 'd')
  end
  if f[1] then
    out[#out + 1] = id
    out[#out + 1] = f[1]
    out[#out + 1] = f[2] or ''
    if kind == 'scheduled' or kind == 'retries' then
      out[#out + 1] = entries[j + 1]
    else
      out[#out + 1] = ''
    end
    out[#out + 1] = f[3] or '0'
    out[#out + 1] = f[4] or ''
    out[#out + 1] = f[5] or ''
  end
end
return out
