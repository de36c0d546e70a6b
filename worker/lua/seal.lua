-- Make a fully staged job runnable, in one step: a producer that dies while streaming
-- leaves a staging job that expires and never runs.
-- Extra KEYS: [N+1] the job index zset, [N+2] events.
-- ARGV: job_id, batches_total, valid ids, unique ids, invalid ids, submitted lines, retention_s.
-- Returns the job's state after sealing ('queued', or 'completed' for a job with no valid id).
local state = redis.call('HGET', K_JOB, 'state')
if not state then return redis.error_reply('NOJOB staging data expired') end
if state ~= 'staging' then return state end
local at = now_ms()
redis.call('HSET', K_JOB, 'state', 'queued', 'batches_total', ARGV[2], 'valid', ARGV[3],
  'unique', ARGV[4], 'invalid', ARGV[5], 'failed', ARGV[5], 'submitted', ARGV[6], 'queued_at', at)
if tonumber(ARGV[5]) > 0 then redis.call('HSET', K_REASONS, 'invalid_id', ARGV[5]) end
for i = 1, N_JOB_KEYS do redis.call('PERSIST', KEYS[i]) end
redis.call('ZADD', KEYS[N_JOB_KEYS + 1], hnum(K_JOB, 'created_at'), ARGV[1])
-- Jobs older than the retention period have expired: keep the index from growing forever.
local created = hnum(K_JOB, 'created_at')
redis.call('ZREMRANGEBYSCORE', KEYS[N_JOB_KEYS + 1], '-inf', created - 2 * tonumber(ARGV[7]) * 1000)
finish_if_complete(ARGV[7], KEYS[N_JOB_KEYS + 2])
return redis.call('HGET', K_JOB, 'state')
