-- Resume a job: a paused one where it stopped; a failed or cancelled one (its key fixed,
-- say) by attempting again every id it counted not attempted.
-- ARGV: window, extra KEYS: none. Returns the batch indices to publish (possibly none).
local state = redis.call('HGET', K_JOB, 'state')
local publish = {}

if state == 'paused' then
  local before = redis.call('HGET', K_JOB, 'paused_from')
  redis.call('HSET', K_JOB, 'state', before == 'queued' and 'queued' or 'running')
  redis.call('HDEL', K_JOB, 'paused_from')
  if before == 'queued' then return {'start'} end
  publish = redis.call('SMEMBERS', K_PARKED)
  redis.call('DEL', K_PARKED)
  local at = now_ms()
  for _, j in ipairs(publish) do redis.call('ZADD', K_INFLIGHT, at, j) end
elseif (state == 'failed' or state == 'cancelled') and hnum(K_JOB, 'not_attempted') > 0 then
  -- Un-count every id not attempted: bulk-skipped batches go back to undispatched,
  -- ids skipped inside dispatched batches lose their outcome (bit and record).
  local total, from = hnum(K_JOB, 'batches_total'), hnum(K_JOB, 'skipped_from')
  local skipped = hnum(K_JOB, 'not_attempted')
  if redis.call('HEXISTS', K_JOB, 'skipped_from') == 1 then
    redis.call('HINCRBY', K_JOB, 'batches_done', from - total)
    redis.call('HSET', K_JOB, 'dispatched', from)
    redis.call('HDEL', K_JOB, 'skipped_from')
  end
  local reopened, positions = {}, {}
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', K_SKIPPED, cursor, 'COUNT', 1000)
    cursor = page[1]
    for k = 1, #page[2], 2 do
      local media_id, index = page[2][k], tonumber(string.match(page[2][k + 1], '^(%d+)|'))
      if not positions[index] then
        positions[index] = {}
        local pos = 0
        for id in string.gmatch(redis.call('HGET', K_BATCHES, index), '[^\n]+') do
          positions[index][id] = pos
          pos = pos + 1
        end
        reopened[#reopened + 1] = index
      end
      redis.call('SETBIT', K_RESOLVED, index * STRIDE + positions[index][media_id], 0)
    end
  until cursor == '0'
  redis.call('DEL', K_SKIPPED)
  redis.call('HINCRBY', K_JOB, 'batches_done', -#reopened)
  redis.call('HINCRBY', K_JOB, 'not_attempted', -skipped)
  redis.call('HSET', K_JOB, 'state', 'running', 'resumed_at', now_ms())
  redis.call('HDEL', K_JOB, 'finished_at', 'stop_state', 'stopped_at')
  redis.call('DEL', K_DONE)
  for i = 1, N_JOB_KEYS do redis.call('PERSIST', KEYS[i]) end
  local at = now_ms()
  for _, j in ipairs(reopened) do
    redis.call('ZADD', K_INFLIGHT, at, j)
    publish[#publish + 1] = tostring(j)
  end
else
  return {}
end

local first, n = reserve(tonumber(ARGV[1]))
for j = first, first + n - 1 do publish[#publish + 1] = tostring(j) end
return publish
