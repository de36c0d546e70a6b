-- Start a queued job and reserve its first window of batches.  ARGV: window.
-- Returns {first, n}: the batches to publish. A redelivered start whose first publish
-- may have been lost (nothing done yet) gets the same range again.
local state = redis.call('HGET', K_JOB, 'state')
if state == 'queued' then
  redis.call('HSET', K_JOB, 'state', 'running', 'started_at', now_ms())
  return {reserve(tonumber(ARGV[1]))}
end
if state == 'running' and hnum(K_JOB, 'batches_done') == 0 then
  return {0, hnum(K_JOB, 'dispatched')}
end
return {0, 0}
