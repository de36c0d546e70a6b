-- Set field ARGV[1] of record KEYS[1] to ARGV[2] only if the record still exists (never
-- resurrect an expired job). Returns 1 if it set it.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
