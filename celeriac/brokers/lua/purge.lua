-- purge: delete up to LIMIT ready, scheduled and lease-expired messages of one queue.
-- ARGV: P, queue, limit.  Keys: P:ready:<q>, P:delayed:<q>, P:retry:<q>, P:leased:<q>, P:m:<id>.
-- Returns how many were deleted; the caller repeats while a call deletes LIMIT.
local q, limit = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local deleted = 0
local function drop(ids, zset)
  for _, id in ipairs(ids) do
    local m = key('m', id)
    unclaim(id, m, q)
    redis.call('ZREM', zset, id)
    deleted = deleted + redis.call('DEL', m)
  end
end
drop(redis.call('ZRANGE', key('ready', q), 0, limit - 1), key('ready', q))
drop(redis.call('ZRANGE', key('delayed', q), 0, limit - 1), key('delayed', q))
drop(redis.call('ZRANGE', key('retry', q), 0, limit - 1), key('retry', q))
drop(redis.call('ZRANGEBYSCORE', key('leased', q), '-inf', now, 'LIMIT', 0, limit), key('leased', q))
return deleted
