-- The fleet limiter as a script of its own (limiter.lua is prepended): one call, one op.
-- KEYS[1]: the limiter hash.  ARGV: op, default rate, burst, max wait µs, pause µs, limit.
-- Returns wait_us (the wait, or the pause left, in µs; see limiter.lua) and rate (the
-- rate in force, requests/s), by name.
local r = limiter(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
                  tonumber(ARGV[5]), tonumber(ARGV[6]))
return {'wait_us', r[1], 'rate', r[2]}
