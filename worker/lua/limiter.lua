-- The fleet's rate limiter: GCRA with reservations, on Redis' clock, one round trip.
-- limiter(key, ...) works on the limiter hash (times in µs since the epoch, rates in requests/s):
--   tat           the next free send slot (GCRA's theoretical arrival time)
--   paused_until  no slot before this (a 429's Retry-After, for the whole fleet)
--   rate          set by `rethrottle`: a number, or 'auto'; else the default rate
--   controller    wmax (the rate when the API last said 429), t0 (when growth restarted),
--                 ceiling (a limit the API announced), m_t/m_n/m_rate (measured rate)
-- Arguments: key, op, default rate (number or 'auto'), burst, max wait µs, pause µs, limit.
--   acquire -> {wait µs, rate}: a slot reserved wait µs from now, or {-wait, rate} if the
--              next slot is further than max wait (nothing reserved).
--   pause   -> {pause left µs, rate}: nobody gets a slot before now + pause µs; in auto
--              mode a 429 is also the one congestion signal of the whole fleet.
--   check   -> {pause left µs, rate}.
--   limit   -> {0, rate}: the API announced its limit (rate-limit headers).
--
-- One controller for the fleet (botocore's adaptive mode keeps one per client): CUBIC
-- growth r(t) = wmax (1 + C (t - K)^3) with K = cbrt((1 - BETA) / C) (normalised, so a
-- cycle lasts as long at 20 req/s as at 400: ~10 s between probes); on a 429 (once per
-- congestion epoch, however many workers saw it) a decrease to BETA x the rate the fleet
-- really sent, measured here in 0.5 s buckets smoothed like botocore's (0.8). The rate is
-- also capped at twice the measured rate (no runaway while the fleet cannot keep up),
-- at any limit the API announced, and at the configured rate: a configured rate is the
-- ceiling, so a fleet set too high still finds the API's limit; 'auto' has none.
-- Tuned with ops/bench/rate_sim.py: after a 429 the curve's plateau sits at FACTOR x the
-- rate reached (just below the limit), and a limit found again at the same place is probed
-- half as often each time (down to C_MIN): a stable limit costs few 429s, and each 429
-- costs a whole Retry-After pause of the fleet.
local BETA, C, EPOCH_US, START, MIN_RATE = 0.85, 0.0025, 2000000, 10, 1
local FACTOR, C_MIN = 0.97, 0.0001

local function limiter(key, op, default_rate, burst, max_wait_us, pause_us, limit_arg)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local h = redis.call('HMGET', key, 'tat', 'paused_until', 'rate', 'wmax', 't0', 'ceiling',
                       'm_t', 'm_n', 'm_rate', 'c', 'm_last')
  local tat, paused = tonumber(h[1] or now), tonumber(h[2] or 0)
  local setting = h[3] or default_rate
  local configured = tonumber(setting)  -- nil for 'auto'
  local ceiling = tonumber(h[6] or 0)
  local m_t, m_n, m_rate = tonumber(h[7] or now), tonumber(h[8] or 0), tonumber(h[9] or 0)
  local writes = {}
  local function put(field, value) writes[#writes + 1] = field; writes[#writes + 1] = value end

  -- A fresh limiter starts at its ceiling (a configured rate) or at START ('auto').
  local wmax = tonumber(h[4] or configured or START)
  local c = tonumber(h[10] or C)
  local k = ((1 - BETA) / c) ^ (1 / 3)
  local t0 = tonumber(h[5] or (now - k * 1000000))
  if not h[5] then put('wmax', tostring(wmax)); put('t0', string.format('%d', t0)) end

  local function current_rate()
    local secs = math.max(0, now - t0) / 1000000
    local r = wmax * (1 + c * (secs - k) ^ 3)
    -- A configured rate is held as is until the API first says 429 ('c' is set then).
    if configured and not h[10] then r = configured end
    -- 'auto' before its first 429: slow start. Only the measured-rate cap below bounds the
    -- climb (x1.8 per 0.5 s bucket: 10 to 400 req/s in about 3 s, not CUBIC's 15 s+).
    if not configured and not h[10] then r = m_rate > 0 and math.huge or START end
    if configured then r = math.min(r, configured) end
    if ceiling > 0 then r = math.min(r, ceiling) end
    -- Twice the measured rate, at most (no runaway while the fleet cannot keep up); not
    -- for a configured rate before any 429: the operator said what the API allows, and a
    -- short job would spend its life climbing out of the cap.
    if m_rate > 0 and (h[10] or not configured) then
      r = math.min(r, math.max(2 * m_rate, START))
    end
    return math.max(MIN_RATE, r)
  end
  local rate = current_rate()

  local function save(ttl_ms)
    if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
    if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
  end

  if op == 'pause' then
    local until_ = now + pause_us
    if now - t0 > EPOCH_US then
      -- Congestion: remember the rate the fleet really reached, decrease below it, and
      -- restart growth once the pause is over.
      -- Ending slow start, the rate in force is the estimate (the limit lies between the
      -- measured rate, a doubling behind, and it); later, what the fleet really sent (the
      -- last raw bucket too: the smoothed rate lags).
      local reached = rate
      local m_last = tonumber(h[11] or 0)
      if m_rate > 0 and h[10] then reached = math.min(rate, math.max(m_rate, m_last)) end
      -- The same limit again: probe it half as often (a stable limit is learnt); else anew.
      local same = h[10] and math.abs(reached * FACTOR - wmax) <= 0.1 * wmax
      put('c', tostring(same and math.max(C_MIN, c / 2) or C))
      put('wmax', tostring(reached * FACTOR))
      put('t0', string.format('%d', math.max(until_, paused)))
      rate = math.max(MIN_RATE, reached * FACTOR * BETA)
    end
    if until_ > paused then
      paused = until_
      put('paused_until', string.format('%d', paused))
      -- Measure again from the pause's end: a bucket spanning the pause would read the
      -- fleet's rate as a trickle, and the 2x cap would hold the fleet down for seconds.
      put('m_t', string.format('%d', paused))
      put('m_n', '0')
    end
    -- The state outlives the pause it holds by an hour, whatever the pause.
    save(math.floor((paused - now) / 1000) + 3600000)
    return {math.max(0, paused - now), tostring(rate)}
  end
  if op == 'check' then return {math.max(0, paused - now), tostring(rate)} end
  if op == 'limit' then
    local limit = limit_arg
    if limit and limit > 0 and limit ~= ceiling then
      put('ceiling', tostring(limit))
      save(3600000)
    end
    return {0, tostring(rate)}
  end

  local interval = 1000000 / rate
  local tau = (burst - 1) * interval
  local send_at = math.max(now, tat - tau, paused)
  local wait = send_at - now
  if wait > max_wait_us then return {-math.floor(wait), tostring(rate)} end
  put('tat', string.format('%d', math.max(tat, send_at) + interval))
  -- Measure what the fleet really sends (reservations granted), 0.5 s buckets.
  if now - m_t >= 500000 then
    local sample = (m_n + 1) * 1000000 / (now - m_t)
    put('m_rate', tostring(0.8 * sample + 0.2 * m_rate))
    put('m_last', tostring(sample))
    put('m_t', string.format('%d', now))
    put('m_n', '0')
  else
    put('m_n', tostring(m_n + 1))
    if not h[7] then put('m_t', string.format('%d', now)) end
  end
  save(3600000)
  return {math.floor(wait), tostring(rate)}
end
