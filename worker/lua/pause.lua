-- Pause a queued or running job: it leaves its run queue (nothing new is taken) and runs
-- holding its batches hand them back before their next request. Returns 1 if it paused.
local state = redis.call('HGET', K_JOB, 'state')
if state ~= 'running' and state ~= 'queued' then return 0 end
redis.call('HSET', K_JOB, 'state', 'paused', 'paused_from', state, 'paused_at', now_ms())
redis.call('ZREM', prefix() .. ':run:' .. (redis.call('HGET', K_JOB, 'priority') or 'normal'),
           redis.call('HGET', K_JOB, 'job_id'))
return 1
