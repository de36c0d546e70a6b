-- Pause a queued or running job: its batches park at their next claim and nothing is sent.
-- Returns 1 if it paused the job.
local state = redis.call('HGET', K_JOB, 'state')
if state ~= 'running' and state ~= 'queued' then return 0 end
redis.call('HSET', K_JOB, 'state', 'paused', 'paused_from', state, 'paused_at', now_ms())
return 1
