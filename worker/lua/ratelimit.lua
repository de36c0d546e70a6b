-- The fleet limiter as a script of its own (limiter.lua is prepended): one call, one op.
-- KEYS[1]: the limiter hash.  ARGV: op, default rate, burst, max wait µs, pause µs, limit.
-- Returns {wait or pause µs, rate} (see limiter.lua).
return limiter(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
               tonumber(ARGV[5]), tonumber(ARGV[6]))
