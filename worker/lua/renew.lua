-- Renew the lease of batch ARGV[1] before a request, if run ARGV[2] still holds it: the
-- request must end before the lease can lapse (ARGV[3] ms from now).
-- Extra KEYS: [N+1] the limiter of the job's key.  ARGV: index, token, lease_ms.
-- Reply (named): status (ok | lost), state, pause_us (the fleet's 429 pause left).
local index, token = tonumber(ARGV[1]), ARGV[2]
local state = redis.call('HGET', K_JOB, 'state') or 'gone'
if redis.call('HGET', K_OWNERS, index) ~= token then
  return record({status = 'lost', state = state, pause_us = 0})
end
redis.call('ZADD', K_PENDING, now_ms() + tonumber(ARGV[3]), index)
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('HGET', KEYS[N_JOB_KEYS + 1], 'paused_until') or '0')
return record({status = 'ok', state = state, pause_us = math.max(0, paused - now_us)})
