-- Stop a job that has not finished: it ends in state ARGV[1] ('failed' or 'cancelled')
-- with error ARGV[2]. Batches never dispatched are counted not attempted at once; the job
-- is 'stopping' until the batches in flight, seeing that state at their claim, have
-- committed their remaining ids as not attempted.
-- Extra KEYS: [N+1] events.  ARGV: state, error, retention_s.  Returns 1 if it stopped the job.
local state = redis.call('HGET', K_JOB, 'state')
if state ~= 'queued' and state ~= 'running' and state ~= 'paused' then return 0 end
redis.call('HSET', K_JOB, 'state', 'stopping', 'stop_state', ARGV[1], 'last_error', ARGV[2],
  'stopped_at', now_ms())
local total, dispatched = hnum(K_JOB, 'batches_total'), hnum(K_JOB, 'dispatched')
if dispatched < total then
  local size = hnum(K_JOB, 'batch_size')
  redis.call('HSET', K_JOB, 'skipped_from', dispatched, 'dispatched', total)
  redis.call('HINCRBY', K_JOB, 'not_attempted', hnum(K_JOB, 'valid') - size * dispatched)
  redis.call('HINCRBY', K_JOB, 'batches_done', total - dispatched)
end
-- Parked batches (a paused job) have no message: stamp them long lost, so the next look
-- of the watchdog (or the cancel command, at once) publishes them to be skipped.
for _, j in ipairs(redis.call('SMEMBERS', K_PARKED)) do redis.call('ZADD', K_INFLIGHT, 0, j) end
redis.call('DEL', K_PARKED)
finish_if_complete(ARGV[3], KEYS[N_JOB_KEYS + 1])
return 1
