-- metrics_read: the stored metric rows of a span of periods (see metrics.lua for the keys).
-- ARGV: P, kind ('mx' per minute, 'mxh' per hour), first period's start, step (s), count,
--   task ('' and a flag: see below), all ('1': every task's row, '0': the one task's)
-- Returns one entry per period, in order: with all = '1' the period's HGETALL (a flat
-- name, row list), else its row for the task (false when it has none). One call instead
-- of a pipeline of one command per period: the server does the loop.
local kind, first, step, count = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local task, all = ARGV[6], ARGV[7] == '1'
local found = {}
for i = 0, count - 1 do
  local k = key(kind, string.format('%d', first + i * step))
  if all then
    found[i + 1] = redis.call('HGETALL', k)
  else
    found[i + 1] = redis.call('HGET', k, task)
  end
end
return found
