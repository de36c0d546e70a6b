-- The watchdog's look at one job: batches queued longer ago than ARGV[1] ms that nobody
-- holds (no lease) and that are not done were lost with their message (a known Celery
-- on Redis window): re-stamp them and return them for publishing. Duplicates are harmless.
-- ARGV: stale_ms, prefix of lease keys ('<prefix>:job:<id>:lease:').
-- Returns {'start'} for a queued job whose start task never ran, else the batch indices.
local state = redis.call('HGET', K_JOB, 'state')
local now = now_ms()
if state == 'queued' then
  if now - hnum(K_JOB, 'queued_at') > tonumber(ARGV[1]) then
    redis.call('HSET', K_JOB, 'queued_at', now)
    return {'start'}
  end
  return {}
end
if state ~= 'running' and state ~= 'stopping' then return {} end
local lost = {}
for _, j in ipairs(redis.call('ZRANGEBYSCORE', K_INFLIGHT, '-inf', now - tonumber(ARGV[1]))) do
  local index = tonumber(j)
  if resolved_count(index) >= batch_size(index) then
    redis.call('ZREM', K_INFLIGHT, j)
  elseif redis.call('EXISTS', ARGV[2] .. j) == 0 then
    redis.call('ZADD', K_INFLIGHT, now, j)
    lost[#lost + 1] = j
  end
end
return lost
