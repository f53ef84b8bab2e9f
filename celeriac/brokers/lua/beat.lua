-- beat: claim one run of a periodic entry and publish its messages in the same step.
-- ARGV: P, receipt, receipt ttl (ms), again, entry name, its previous last run ('' for
--       none), the run's time, then per message the fields of publish.lua.
-- Keys written: P:beat (hash: entry name -> last run, as Python's repr of the float),
--       then those of publish.lua, whose text follows this one in the same script.
-- A compare-and-set: when the stored last run is not the one the beat read, another
-- beat claimed the run (or this call's first try did, its reply lost): nothing happens.
local runs = key('beat')
local stored = redis.call('HGET', runs, ARGV[5])
if (stored or '') ~= ARGV[6] then return 0 end
redis.call('HSET', runs, ARGV[5], ARGV[7])
-- What follows is publish.lua, which reads its messages from ARGV[5] on.
table.remove(ARGV, 5)
table.remove(ARGV, 5)
table.remove(ARGV, 5)
