-- Make a fully staged job runnable, in one step: a producer that dies while streaming
-- leaves a staging job that expires and never runs.
-- ARGV: job_id, batches_total, valid ids, unique ids, invalid ids, submitted lines, retention_s.
-- Returns the job's state after sealing ('queued', or 'completed' for a job with no valid id).
local state = redis.call('HGET', K_JOB, 'state')
if not state then return redis.error_reply('NOJOB staging data expired') end
if state ~= 'staging' then return state end
local p, job_id, retention = prefix(), ARGV[1], tonumber(ARGV[7])
local created = hnum(K_JOB, 'created_at')
redis.call('HSET', K_JOB, 'state', 'queued', 'batches_total', ARGV[2], 'valid', ARGV[3],
  'total', ARGV[4], 'invalid', ARGV[5], 'failed', ARGV[5], 'submitted', ARGV[6],
  'queued_at', now_ms(), 'next', 0, 'retention_s', retention)
if tonumber(ARGV[5]) > 0 then redis.call('HSET', K_REASONS, 'invalid_id', ARGV[5]) end
for _, key in ipairs(job_keys(p, job_id)) do redis.call('PERSIST', key) end
redis.call('ZADD', p .. ':jobs', created, job_id)
-- Jobs older than the retention period have expired: keep the index from growing forever.
redis.call('ZREMRANGEBYSCORE', p .. ':jobs', '-inf', created - 2 * retention * 1000)
if finish_if_complete() == 0 then
  redis.call('ZADD', p .. ':active', created, job_id)
  redis.call('ZADD', p .. ':run:' .. (redis.call('HGET', K_JOB, 'priority') or 'normal'), 0, job_id)
end
return redis.call('HGET', K_JOB, 'state')
