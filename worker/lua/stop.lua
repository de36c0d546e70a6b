-- Stop a job that has not finished: it ends in state ARGV[1] ('failed' or 'cancelled')
-- with error ARGV[2]. Batches never taken are counted not attempted at once, and so are
-- batches handed back that no request was ever sent for. Batches a request may have been
-- sent for are taken once more, to confirm what became of their ids (never guessed
-- not_attempted: the API may have deleted them). The job is 'stopping' until then.
-- ARGV: state, error, reason given to ids not attempted.  Returns 1 if it stopped the job.
local state = redis.call('HGET', K_JOB, 'state')
if state ~= 'queued' and state ~= 'running' and state ~= 'paused' then return 0 end
local now = now_ms()
redis.call('HSET', K_JOB, 'state', 'stopping', 'stop_state', ARGV[1], 'last_error', ARGV[2],
  'stop_reason', ARGV[3], 'stopped_at', now)
local total, next = hnum(K_JOB, 'batches_total'), hnum(K_JOB, 'next')
-- Batches past the frontier marked possibly sent (lost_writes.lua: the store lost the
-- takes that sent them) are not guessed either: they wait for a run to confirm them.
while next < total and redis.call('SISMEMBER', K_SENT, next) == 1 do
  redis.call('ZADD', K_PENDING, 'NX', now, next)
  next = next + 1
end
if next < total then
  local size = hnum(K_JOB, 'batch_size')
  redis.call('HSET', K_JOB, 'not_attempted_from', next)
  redis.call('HINCRBY', K_JOB, 'not_attempted', hnum(K_JOB, 'valid') - size * next)
  redis.call('HINCRBY', K_JOB, 'batches_done', total - next)
end
redis.call('HSET', K_JOB, 'next', total)
for _, j in ipairs(redis.call('ZRANGEBYSCORE', K_PENDING, '-inf', now)) do
  local index = tonumber(j)
  if redis.call('HEXISTS', K_OWNERS, index) == 0 and redis.call('SISMEMBER', K_SENT, index) == 0 then
    close_batch(index, 'not_attempted', ARGV[3])
  end
end
if finish_if_complete() == 0 then
  -- Runs must see the stop (and confirm possibly sent batches), paused or not.
  redis.call('ZADD', prefix() .. ':run:' .. (redis.call('HGET', K_JOB, 'priority') or 'normal'),
             'NX', 0, redis.call('HGET', K_JOB, 'job_id'))
end
return 1
