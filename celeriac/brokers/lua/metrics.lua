-- metrics: add metric rows to the stored ones (celeriac/brokers/metrics.py, metrics_redis.py).
-- Keys (under P, see prelude.lua):
--   P:mx:<minute>   hash   task name -> "processed,failed,retried,stalls|i:c,i:c,..."
--                          (the runtime histogram's non-empty buckets); field '' is the
--                          minute's total. Expires (EXPIREAT) when the minute is older
--                          than the retention, so nothing else ever deletes rows.
--   P:sent:<receipt> string  the receipt of a write (as publish's): a retry whose first
--                          try was applied before its reply was lost adds nothing twice
-- ARGV: P, receipt, receipt ttl (ms), again ('1' on a retry), retention (s), most task
--   names per minute, the overflow name, the total's name, then minute, task, row
--   triples (the rows and totals of with_totals)
-- A task name new to a minute that already has the most names is added to the overflow
-- name's row instead. Returns 1.
if ARGV[4] == '1' and redis.call('EXISTS', key('sent', ARGV[2])) == 1 then
  return 1
end
local retention, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local other, total = ARGV[7], ARGV[8]

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

for at = 9, #ARGV, 3 do
  local minute, task, row = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local k = key('mx', minute)
  local old = redis.call('HGET', k, task)
  if not old and task ~= total and task ~= other then
    -- The minute's names, less its total and overflow rows (when it has them).
    local named = redis.call('HLEN', k) - redis.call('HEXISTS', k, total)
                  - redis.call('HEXISTS', k, other)
    if named >= cap then
      task = other
      old = redis.call('HGET', k, task)
    end
  end
  redis.call('HSET', k, task, old and add(old, row) or row)
  redis.call('EXPIREAT', k, tonumber(minute) + 60 + retention)
end
redis.call('SET', key('sent', ARGV[2]), '1', 'PX', ARGV[3])
return 1
