-- amqp_state: the RabbitMQ broker's writes to a Redis state store
-- (celeriac/brokers/amqp/state_redis.py; reads are plain pipelined commands there).
-- ARGV: P, action, ...
--   notes_add   receipt, receipt ttl (ms), again, note ttl (ms), then per note: id, json
--               RPUSH to P:amqp:notes:<id>, which then expires `note ttl` after this call.
--   notes_drop  receipt, receipt ttl (ms), again, then per id: id, n
--               LTRIM P:amqp:notes:<id> n -1: exactly the oldest n go (a later note stays).
--   schedule    now (unix s), keep (ms), then per entry: queue, id, due (unix s)
--               ZADD P:amqp:scheduled:<queue> due id; the set then lives at least until
--               `keep` after its latest due (an abandoned queue's set goes by itself).
-- Neither RPUSH nor LTRIM may be repeated, so both carry a receipt, P:sent:<receipt> (as
-- publish does): a retry whose first try was applied before its reply was lost
-- ('again' = '1') finds it and changes nothing. ZADD and PEXPIRE repeat harmlessly.
local action = ARGV[2]

-- Whether this call is a retry of one that was applied; else notes that it is applied now.
local function already_applied()
  local receipt = key('sent', ARGV[3])
  if ARGV[5] == '1' and redis.call('EXISTS', receipt) == 1 then return true end
  redis.call('SET', receipt, '1', 'PX', ARGV[4])
  return false
end

if action == 'notes_add' then
  if already_applied() then return 0 end
  local ttl = ARGV[6]
  for i = 7, #ARGV, 2 do
    local k = key('amqp', 'notes', ARGV[i])
    redis.call('RPUSH', k, ARGV[i + 1])
    redis.call('PEXPIRE', k, ttl)
  end
  return 1
elseif action == 'notes_drop' then
  if already_applied() then return 0 end
  for i = 6, #ARGV, 2 do
    redis.call('LTRIM', key('amqp', 'notes', ARGV[i]), tonumber(ARGV[i + 1]), -1)
  end
  return 1
elseif action == 'schedule' then
  local now, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
  local latest = {}
  for i = 5, #ARGV, 3 do
    local q, due = ARGV[i], tonumber(ARGV[i + 2])
    redis.call('ZADD', key('amqp', 'scheduled', q), ARGV[i + 2], ARGV[i + 1])
    if latest[q] == nil or due > latest[q] then latest[q] = due end
  end
  for q, due in pairs(latest) do
    local k = key('amqp', 'scheduled', q)
    local wanted = math.max(math.ceil((due - now) * 1000), 0) + keep
    -- PTTL is -1 for a set without expiry: never the case after the first call, but set one.
    if redis.call('PTTL', k) < wanted then redis.call('PEXPIRE', k, wanted) end
  end
  return 1
end
return redis.error_reply('amqp_state: unknown action ' .. tostring(action))
