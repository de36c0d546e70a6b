-- Shared prelude of the job scripts (prepended by store.py; Lua has no includes).
-- KEYS follow keys.Keys.job_keys(): the record, then one key per JOB_SUFFIXES entry,
-- then the scripts' own extra keys. Scripts check first and write last: Redis does not
-- roll back the writes made before a runtime error.
local K_JOB, K_BATCHES, K_RESOLVED, K_FAILED, K_ABSENT, K_SKIPPED, K_REASONS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local K_CLAIMS, K_ATTEMPTS, K_UNCERTAIN, K_OPS, K_DONE = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_INFLIGHT, K_PARKED = KEYS[13], KEYS[14]
local N_JOB_KEYS = 14
local STRIDE = 128

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hnum(key, field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
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

-- Reserve up to `window` batches in flight; returns the first index and how many.
-- Each is stamped in the in-flight set, where the watchdog finds messages that were lost.
local function reserve(window)
  local total, dispatched = hnum(K_JOB, 'batches_total'), hnum(K_JOB, 'dispatched')
  local in_flight = dispatched - hnum(K_JOB, 'batches_done')
  local n = math.min(window - in_flight, total - dispatched)
  if n <= 0 then return dispatched, 0 end
  redis.call('HINCRBY', K_JOB, 'dispatched', n)
  local at = now_ms()
  for j = dispatched, dispatched + n - 1 do redis.call('ZADD', K_INFLIGHT, at, j) end
  return dispatched, n
end

-- Marks the job finished exactly once, when its last batch is done. Returns 1 if it did.
local function finish_if_complete(retention_s, events_key)
  if hnum(K_JOB, 'batches_done') < hnum(K_JOB, 'batches_total') then return 0 end
  if not redis.call('SET', K_DONE, '1', 'NX') then return 0 end
  local state = redis.call('HGET', K_JOB, 'state')
  if state == 'stopping' then
    state = redis.call('HGET', K_JOB, 'stop_state')
  else
    state = 'completed'
  end
  local at = now_ms()
  redis.call('HSET', K_JOB, 'state', state, 'finished_at', at)
  redis.call('DEL', K_INFLIGHT, K_PARKED)
  for i = 1, N_JOB_KEYS do redis.call('EXPIRE', KEYS[i], retention_s) end
  redis.call('LPUSH', events_key, cjson.encode({
    job_id = redis.call('HGET', K_JOB, 'job_id'), state = state, finished_at = at}))
  redis.call('LTRIM', events_key, 0, 999)
  return 1
end
