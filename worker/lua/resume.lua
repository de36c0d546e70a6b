-- Resume a job: a paused one where it stopped; a failed or cancelled one (its key fixed,
-- say) by attempting again every id it counted not attempted. The job goes back to its
-- run queue. A finished job is takeable only ARGV[1] ms later: by then an AOF written
-- every second holds the resume, so a Redis crash cannot lose it after runs deleted
-- what it reopened (the lost-writes check only sees unfinished jobs).
-- Returns 1 if it resumed the job.
local state = redis.call('HGET', K_JOB, 'state')
local queue = prefix() .. ':run:' .. (redis.call('HGET', K_JOB, 'priority') or 'normal')
local job_id = redis.call('HGET', K_JOB, 'job_id')
if state == 'paused' then
  local before = redis.call('HGET', K_JOB, 'paused_from')
  redis.call('HSET', K_JOB, 'state', before == 'queued' and 'queued' or 'running')
  redis.call('HDEL', K_JOB, 'paused_from')
  redis.call('ZADD', queue, 0, job_id)
  return 1
end
if (state ~= 'failed' and state ~= 'cancelled') or hnum(K_JOB, 'not_attempted') == 0 then return 0 end
-- Un-count every id not attempted: batches never taken go back to never taken, ids not
-- attempted inside taken batches lose their outcome (bit and record) and wait, pending.
local total, from = hnum(K_JOB, 'batches_total'), hnum(K_JOB, 'not_attempted_from')
local not_attempted = hnum(K_JOB, 'not_attempted')
if redis.call('HEXISTS', K_JOB, 'not_attempted_from') == 1 then
  redis.call('HINCRBY', K_JOB, 'batches_done', from - total)
  redis.call('HSET', K_JOB, 'next', from)
  redis.call('HDEL', K_JOB, 'not_attempted_from')
end
local reopened, positions = {}, {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', K_NOT_ATTEMPTED, cursor, 'COUNT', 1000)
  cursor = page[1]
  for k = 1, #page[2], 2 do
    local media_id, index = page[2][k], tonumber(string.match(page[2][k + 1], '^(%d+)|'))
    if not positions[index] then
      positions[index] = {}
      for pos, id in ipairs(batch_ids(index)) do positions[index][id] = pos - 1 end
      reopened[#reopened + 1] = index
    end
    redis.call('SETBIT', K_RESOLVED, index * STRIDE + positions[index][media_id], 0)
  end
until cursor == '0'
redis.call('DEL', K_NOT_ATTEMPTED)
redis.call('HINCRBY', K_JOB, 'batches_done', -#reopened)
redis.call('HINCRBY', K_JOB, 'not_attempted', -not_attempted)
local now = now_ms()
redis.call('HSET', K_JOB, 'state', 'running', 'resumed_at', now, 'runnable_at', now + tonumber(ARGV[1]))
redis.call('HDEL', K_JOB, 'finished_at', 'stop_state', 'stopped_at', 'stop_reason')
redis.call('DEL', K_DONE)
for _, key in ipairs(job_keys(prefix(), job_id)) do redis.call('PERSIST', key) end
for _, j in ipairs(reopened) do redis.call('ZADD', K_PENDING, now, j) end
redis.call('ZADD', queue, 0, job_id)
redis.call('ZADD', prefix() .. ':active', hnum(K_JOB, 'created_at'), job_id)
return 1
