-- Shared prelude of the job scripts (prepended by store.py after the generated header,
-- which declares K_JOB, K_BATCHES, ... from keys.JOB_SUFFIXES, `bind(keys)` and
-- `job_keys(prefix, id)`; Lua has no includes). Scripts check first and write last:
-- Redis does not roll back the writes made before a runtime error.
local STRIDE = 128

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hnum(key, field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
end

-- The key prefix, read off the record's name ('<prefix>:job:<id>'; ids have no ':').
local function prefix()
  return string.match(K_JOB, '^(.*):job:[^:]+$')
end

-- Ids in a batch: every batch is full but the last one.
local function batch_size(index)
  local valid, size = hnum(K_JOB, 'valid'), hnum(K_JOB, 'batch_size')
  return math.min(size, valid - size * index)
end

local function resolved_count(index)
  local first = index * STRIDE / 8
  return redis.call('BITCOUNT', K_RESOLVED, first, first + STRIDE / 8 - 1)
end

local function batch_ids(index)
  local ids = {}
  for id in string.gmatch(redis.call('HGET', K_BATCHES, index) or '', '[^\n]+') do
    ids[#ids + 1] = id
  end
  return ids
end

local function is_resolved(index, pos)
  return redis.call('GETBIT', K_RESOLVED, index * STRIDE + pos) == 1
end

-- Give id `pos` of batch `index` its outcome, the first time only. Returns 1 if it did.
-- outcome: deleted | not_found | failed | not_attempted (reason for the last two).
local function resolve(index, pos, id, outcome, reason)
  if redis.call('SETBIT', K_RESOLVED, index * STRIDE + pos, 1) == 1 then return 0 end
  if outcome == 'not_found' then
    redis.call('SADD', K_NOT_FOUND, id)
  elseif outcome == 'failed' then
    redis.call('HSET', K_FAILED, id, reason)
    redis.call('HINCRBY', K_REASONS, reason, 1)
  elseif outcome == 'not_attempted' then
    redis.call('HSET', K_NOT_ATTEMPTED, id, index .. '|' .. reason)
  end
  redis.call('HINCRBY', K_JOB, outcome, 1)
  return 1
end

-- Marks the job finished exactly once, when its last batch is done. Returns 1 if it did.
local function finish_if_complete()
  if hnum(K_JOB, 'batches_done') < hnum(K_JOB, 'batches_total') then return 0 end
  if not redis.call('SET', K_DONE, '1', 'NX') then return 0 end
  local state = redis.call('HGET', K_JOB, 'state')
  if state == 'stopping' then
    state = redis.call('HGET', K_JOB, 'stop_state')
  else
    state = 'completed'
  end
  local at, p = now_ms(), prefix()
  local job_id = redis.call('HGET', K_JOB, 'job_id')
  redis.call('HSET', K_JOB, 'state', state, 'finished_at', at)
  redis.call('ZREM', p .. ':run:' .. (redis.call('HGET', K_JOB, 'priority') or 'normal'), job_id)
  redis.call('ZREM', p .. ':active', job_id)
  redis.call('DEL', K_PENDING, K_OWNERS)
  local retention = hnum(K_JOB, 'retention_s')
  for _, key in ipairs(job_keys(p, job_id)) do redis.call('EXPIRE', key, retention) end
  redis.call('LPUSH', p .. ':events', cjson.encode({job_id = job_id, state = state, finished_at = at}))
  redis.call('LTRIM', p .. ':events', 0, 999)
  return 1
end

-- Batch `index` has every id's outcome: it leaves the pending set; the job may be done.
local function batch_finished(index)
  -- Only a pending batch can finish: whatever calls this twice counts it once.
  if redis.call('ZREM', K_PENDING, index) == 0 then return 0 end
  redis.call('HDEL', K_OWNERS, index)
  redis.call('HDEL', K_RUNS, index)
  redis.call('HINCRBY', K_JOB, 'batches_done', 1)
  return finish_if_complete()
end

-- Every id of batch `index` still without an outcome gets `outcome` with `reason`.
-- Returns {ids given it, 1 if the job finished}.
local function close_batch(index, outcome, reason)
  local n = 0
  for pos, id in ipairs(batch_ids(index)) do n = n + resolve(index, pos - 1, id, outcome, reason) end
  return {n, batch_finished(index)}
end

-- The reply of a script as a flat list of name/value pairs (store.py reads it by name).
local function record(t)
  local out = {}
  for k, v in pairs(t) do out[#out + 1] = k; out[#out + 1] = tostring(v) end
  return out
end
