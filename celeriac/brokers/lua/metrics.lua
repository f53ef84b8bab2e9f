-- metrics: add metric rows to the stored ones (celeriac/brokers/metrics.py, metrics_redis.py).
-- Keys (under P, see prelude.lua):
--   P:mx:<minute>   hash   task name -> "processed,failed,retried,stalls|i:c,i:c,..."
--                          (the runtime histogram's non-empty buckets); field '' is the
--                          minute's total. Expires (EXPIREAT) when the minute is older
--                          than the retention, so nothing else ever deletes rows.
--   P:mxh:<hour>    hash   the same per hour
--   P:sent:<receipt> string  the receipt of a write (as publish's): a retry whose first
--                          try was applied before its reply was lost adds nothing twice
-- ARGV: P, receipt, receipt ttl (ms), again ('1' on a retry), most task names per
--   period, the overflow name, the total's name, then per row (stored_rows): its hash
--   ('mx:<minute>' or 'mxh:<hour>'), when the hash expires (unix s), task, row
-- A task name new to a period that already has the most names is added to the overflow
-- name's row instead. Returns 1.
if ARGV[4] == '1' and redis.call('EXISTS', key('sent', ARGV[2])) == 1 then
  return 1
end
local cap, other, total = tonumber(ARGV[5]), ARGV[6], ARGV[7]

local function parse(text)
  local head, tail = string.match(text, '^([^|]*)|(.*)$')
  local counts = {}
  for n in string.gmatch(head, '%d+') do
    counts[#counts + 1] = tonumber(n)
  end
  local hist = {}
  for i, c in string.gmatch(tail, '(%d+):(%d+)') do
    hist[tonumber(i)] = (hist[tonumber(i)] or 0) + tonumber(c)
  end
  return counts, hist
end

local function add(old, new)
  local a, ha = parse(old)
  local b, hb = parse(new)
  local counts = {}
  for i = 1, 4 do
    counts[i] = string.format('%d', (a[i] or 0) + (b[i] or 0))
  end
  for i, c in pairs(hb) do
    ha[i] = (ha[i] or 0) + c
  end
  local order = {}
  for i in pairs(ha) do
    order[#order + 1] = i
  end
  table.sort(order)
  local pairs_ = {}
  for _, i in ipairs(order) do
    pairs_[#pairs_ + 1] = string.format('%d:%d', i, ha[i])
  end
  return table.concat(counts, ',') .. '|' .. table.concat(pairs_, ',')
end

for at = 8, #ARGV, 4 do
  local k, expires, task, row = P .. ':' .. ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local old = redis.call('HGET', k, task)
  if not old and task ~= total and task ~= other then
    -- The period's names, less its total and overflow rows (when it has them).
    local named = redis.call('HLEN', k) - redis.call('HEXISTS', k, total)
                  - redis.call('HEXISTS', k, other)
    if named >= cap then
      task = other
      old = redis.call('HGET', k, task)
    end
  end
  redis.call('HSET', k, task, old and add(old, row) or row)
  redis.call('EXPIREAT', k, expires)
end
redis.call('SET', key('sent', ARGV[2]), '1', 'PX', ARGV[3])
return 1
