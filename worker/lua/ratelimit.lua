-- The fleet's rate limiter: GCRA with reservations, on Redis' clock, one round trip.
-- KEYS[1]: the limiter hash {tat, paused_until, rate} (µs since the epoch; rate in req/s,
-- set by `rethrottle`, else ARGV[2]).
-- ARGV: op, default rate, burst, max wait µs, pause µs.
--   acquire -> {wait µs, rate}: a slot reserved wait µs from now, or {-wait, rate} if the
--              next slot is further than max wait (nothing reserved).
--   pause   -> {pause left µs, rate}: nobody is given a slot before now + pause µs
--              (a 429: one pause for the fleet, not one per worker).
--   check   -> {pause left µs, rate}.
local key, op = KEYS[1], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(redis.call('HGET', key, 'rate') or ARGV[2])
local interval = 1000000 / rate
local tau = (tonumber(ARGV[3]) - 1) * interval
local tat = tonumber(redis.call('HGET', key, 'tat') or now)
local paused = tonumber(redis.call('HGET', key, 'paused_until') or 0)
local rate_s = tostring(rate)

if op == 'pause' then
  local until_ = now + tonumber(ARGV[5])
  if until_ > paused then
    paused = until_
    redis.call('HSET', key, 'paused_until', string.format('%d', paused))
    -- The state outlives the pause it holds by an hour, whatever the pause.
    redis.call('PEXPIRE', key, math.floor((paused - now) / 1000) + 3600000)
  end
  return {math.max(0, paused - now), rate_s}
end
if op == 'check' then return {math.max(0, paused - now), rate_s} end

local send_at = math.max(now, tat - tau, paused)
local wait = send_at - now
if wait > tonumber(ARGV[4]) then return {-math.floor(wait), rate_s} end
redis.call('HSET', key, 'tat', string.format('%d', math.max(tat, send_at) + interval))
if redis.call('PTTL', key) < 3600000 then redis.call('PEXPIRE', key, 3600000) end
return {math.floor(wait), rate_s}
