-- Prepended to every celeriac script by celeriac/brokers/redis.py.
--
-- ARGV[1] is always the key prefix P. Every key lives under it:
--   P:seq              string  publish counter; orders messages within a priority
--   P:queues           set     names of every queue that has had a message
--   P:m:<id>           hash    a live message: q queue, p priority (0-9), s ready score,
--                              b body, e when published (unix ms), r '1' for a task's
--                              retry published with a countdown (else absent), d
--                              deliveries so far, t fencing token (d and t from the
--                              first claim on),
--                              c consumer (present only while claimed),
--                              x while suspect, its group: the most tasks it may run
--                              beside, itself included (released from a process that
--                              died running it beside other tasks; set by release, gone
--                              with the message: absent means not suspect)
--   P:ready:<q>        zset    id -> s = (9 - p) * 1e13 + seq: lowest is claimed first
--   P:delayed:<q>      zset    id -> unix ms when its eta/countdown is due (not retries)
--   P:retry:<q>        zset    id -> unix ms when a task's retry (r = '1') is due: the two
--                              zsets are the dashboard's "scheduled" and "retries" pages
--   P:paused           set     names of paused queues (workers poll it, fetch ignores it)
--   P:leased:<q>       zset    id -> unix ms when its lease runs out (server clock)
--   P:held:<consumer>  set     ids claimed by one worker process (for release at death)
--   P:wake:<q>         list    wake-up tokens for fetches blocked in BLPOP (at most 16)
--   P:dl:<id>          hash    a dead letter: q, p, b, d, reason, at (unix ms)
--   P:dead, P:dead:<q> zset    dead-letter ids -> unix ms, all queues / one queue
--   P:workers          hash    worker name -> JSON info;  P:workers:exp zset name -> unix ms
--   P:events           zset    last seq of a batch -> "n|@id" (its events at P:events:b:<id>,
--                              a string of JSON lines; or "first|json\njson..." inline, as
--                              earlier versions stored it);  P:events:seq string counter
--   P:revoked          zset    seq -> "seq|json" of a revocation;  P:revoked:seq string counter
--   P:revoked:exp      zset    seq -> unix s (float) when that revocation expires
--   P:control          zset    seq -> "seq|json" of a control command (the newest 1000);
--                              P:control:seq string counter (the newest seq: a new reader's cursor)
--   P:reply:<box>      list    JSON replies to one control command, expiring (PEXPIRE)
--   P:sent:<receipt>   string  a short-lived receipt of a publish or control write (retries)
--   P:rl:*, P:cl:*             rate and concurrency limits: see limits.lua
--   P:mx:<minute>, P:mxh:<hour> metric rows of one minute or hour, by task name: metrics.lua
--   P:amqp:*                   the RabbitMQ broker's records when this Redis is its state
--                              store: see amqp_state.lua and brokers/amqp/state_redis.py
-- Keys are built from ARGV, so the scripts need a standalone Redis (not Cluster).
local P = ARGV[1]

local function key(...)
  return P .. ':' .. table.concat({...}, ':')
end

-- The Redis server's clock in ms: leases and etas never depend on a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The message hash of a claim that (id, token) still holds, its queue and its holder;
-- nil if stale.
local function held(id, token)
  local m = key('m', id)
  local v = redis.call('HMGET', m, 't', 'c', 'q')
  if v[2] and v[1] == token then
    return m, v[3], v[2]
  end
  return nil, nil, nil
end

-- Forget that a message is claimed: its holder, its lease.
local function unclaim(id, m, q)
  local c = redis.call('HGET', m, 'c')
  if c then
    redis.call('SREM', key('held', c), id)
    redis.call('HDEL', m, 'c')
  end
  redis.call('ZREM', key('leased', q), id)
end

local function make_ready(id, m, q)
  redis.call('ZADD', key('ready', q), redis.call('HGET', m, 's'), id)
end

-- The zset of a message waiting for its due time: retries apart from the others.
local function delayed_key(m, q)
  if redis.call('HEXISTS', m, 'r') == 1 then return key('retry', q) end
  return key('delayed', q)
end

-- Wake one fetch blocked on this queue; the list is capped so idle queues keep no backlog
-- (trimmed only when it has grown past the cap: a call less on every publish).
local function wake(q)
  if redis.call('LPUSH', key('wake', q), '1') > 16 then
    redis.call('LTRIM', key('wake', q), 0, 15)
  end
end

local function bury(id, m, q, reason, now)
  unclaim(id, m, q)
  redis.call('ZREM', key('ready', q), id)
  redis.call('ZREM', key('delayed', q), id)
  redis.call('ZREM', key('retry', q), id)
  redis.call('HSET', m, 'reason', reason, 'at', now)
  redis.call('HDEL', m, 't', 's', 'x')
  redis.call('RENAME', m, key('dl', id))
  redis.call('ZADD', key('dead', q), now, id)
  redis.call('ZADD', key('dead'), now, id)
end
