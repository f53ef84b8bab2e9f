-- control: revocations, the remote-control command stream and reply boxes.
-- ARGV: P, action, ...
--   revoke       receipt, receipt ttl (ms), again, then per revocation: expires (unix s), json
--                each stored in P:revoked as "seq|json" under a new P:revoked:seq, and in
--                P:revoked:exp as seq -> expires; expired ones dropped. Returns 1.
--   revocations  after, limit
--                expired ones dropped, then up to `limit` "seq|json" with seq > after.
--   broadcast    receipt, receipt ttl (ms), again, kept, json
--                stored in P:control as "seq|json" under a new P:control:seq; only the
--                newest `kept` are kept. Returns the seq.
--   reply        receipt, receipt ttl (ms), again, box, ttl (ms), json
--                RPUSH to P:reply:<box>, which expires `ttl` after this reply. Returns 1.
-- Writes carry a receipt, P:sent:<receipt> (as publish does): a retry whose first try was
-- applied before its reply was lost ('again' = '1') finds it and stores nothing twice.
-- Revocation expiry is judged by the server's clock.
local action = ARGV[2]

-- The first try's result when this call is a retry of one that was applied, else nil.
local function applied_before()
  if ARGV[5] == '1' then return redis.call('GET', key('sent', ARGV[3])) end
  return nil
end

-- Note that this call was applied, with its result, for a retry to find.
local function receipt(result)
  redis.call('SET', key('sent', ARGV[3]), result, 'PX', ARGV[4])
end

local function drop_expired_revocations()
  local now = now_ms() / 1000
  local exp = key('revoked', 'exp')
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, seq in ipairs(gone) do
    redis.call('ZREMRANGEBYSCORE', key('revoked'), seq, seq)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', exp, '-inf', now) end
end

if action == 'revoke' then
  if applied_before() then return 1 end
  for i = 6, #ARGV, 2 do
    local seq = redis.call('INCR', key('revoked', 'seq'))
    redis.call('ZADD', key('revoked'), seq, seq .. '|' .. ARGV[i + 1])
    redis.call('ZADD', key('revoked', 'exp'), ARGV[i], seq)
  end
  drop_expired_revocations()
  receipt('1')
  return 1
elseif action == 'revocations' then
  drop_expired_revocations()
  return redis.call('ZRANGEBYSCORE', key('revoked'), '(' .. ARGV[3], '+inf', 'LIMIT', 0, ARGV[4])
elseif action == 'broadcast' then
  local before = applied_before()
  if before then return tonumber(before) end
  local seq = redis.call('INCR', key('control', 'seq'))
  redis.call('ZADD', key('control'), seq, seq .. '|' .. ARGV[7])
  local kept = tonumber(ARGV[6])
  if kept > 0 then
    redis.call('ZREMRANGEBYRANK', key('control'), 0, -(kept + 1))
  else
    redis.call('DEL', key('control'))
  end
  receipt(seq)
  return seq
elseif action == 'reply' then
  if applied_before() then return 1 end
  local box = key('reply', ARGV[6])
  redis.call('RPUSH', box, ARGV[8])
  redis.call('PEXPIRE', box, ARGV[7])
  receipt('1')
  return 1
end
return redis.error_reply('unknown control action ' .. action)
