-- Commit outcomes of batch ARGV[1], id by id: each id is counted the first time it gets
-- an outcome and never again, whatever is redelivered or run twice.
-- Extra KEYS: [N+1] lease, [N+2] events.  ARGV: index, token, payload (JSON), window,
-- retention_s.  Payload: d = deleted positions, a = already-absent positions,
-- f = {{pos, reason}} failed, s = {{pos, reason}} not attempted, hd/ld vector counts,
-- tries = API attempts made (429s excepted), reqs = requests sent, r429 / retries = counters, op = operation id,
-- err = last error, unc = 1 if this run's attempts may have deleted, fin = 1 when the run
-- ends (release the lease and reset the crash count), later = ms until the run's
-- countdown retry (0: none).
-- Returns {new ids counted, batch done now (0/1), job finished now (0/1), first, n}
-- where first/n is the range of successor batches reserved for publishing.
local index, token, window, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4]), ARGV[5]
local p = cjson.decode(ARGV[3])
local K_LEASE, K_EVENTS = KEYS[N_JOB_KEYS + 1], KEYS[N_JOB_KEYS + 2]

local packed = redis.call('HGET', K_BATCHES, index)
if not packed or not redis.call('HGET', K_JOB, 'state') then return {0, 0, 0, 0, 0} end
local ids = {}
for id in string.gmatch(packed, '[^\n]+') do ids[#ids + 1] = id end
local function check(pos)
  if type(pos) ~= 'number' or pos < 0 or pos >= #ids or pos % 1 ~= 0 then
    error('position out of range: ' .. tostring(pos))
  end
end
for _, pos in ipairs(p.d) do check(pos) end
for _, pos in ipairs(p.a) do check(pos) end
for _, e in ipairs(p.f) do check(e[1]) end
for _, e in ipairs(p.s) do check(e[1]) end

local before = resolved_count(index)
local base = index * STRIDE
local function first_time(pos) return redis.call('SETBIT', K_RESOLVED, base + pos, 1) == 0 end

local deleted, absent, failed, skipped = 0, 0, 0, 0
for _, pos in ipairs(p.d) do if first_time(pos) then deleted = deleted + 1 end end
for _, pos in ipairs(p.a) do
  if first_time(pos) then
    absent = absent + 1
    redis.call('SADD', K_ABSENT, ids[pos + 1])
  end
end
for _, e in ipairs(p.f) do
  if first_time(e[1]) then
    failed = failed + 1
    redis.call('HSET', K_FAILED, ids[e[1] + 1], e[2])
    redis.call('HINCRBY', K_REASONS, e[2], 1)
  end
end
for _, e in ipairs(p.s) do
  if first_time(e[1]) then
    skipped = skipped + 1
    redis.call('HSET', K_SKIPPED, ids[e[1] + 1], index .. '|' .. e[2])
  end
end

local function add(field, n) if n ~= 0 then redis.call('HINCRBY', K_JOB, field, n) end end
add('deleted', deleted)
add('already_absent', absent)
add('failed', failed)
add('not_attempted', skipped)
if deleted > 0 then
  -- Vector counts belong to the answer that deleted the ids; an answer whose ids were all
  -- counted already is a replay and adds nothing.
  add('hd_vectors', p.hd)
  add('ld_vectors', p.ld)
end
add('rate_limited', p.r429)
add('retries', p.retries)
add('requests', p.reqs)
if p.tries > 0 then redis.call('HINCRBY', K_ATTEMPTS, index, p.tries) end
if p.op ~= '' then redis.call('HSET', K_OPS, index, p.op) end
if p.err ~= '' then redis.call('HSET', K_JOB, 'last_error', p.err) end
if p.unc == 1 then redis.call('SADD', K_UNCERTAIN, index) end
if p.later > 0 then
  -- The run comes back by a countdown retry: the watchdog must not count it lost before.
  redis.call('ZADD', K_INFLIGHT, 'XX', now_ms() + p.later, index)
end
if p.fin == 1 then
  redis.call('HDEL', K_CLAIMS, index)
  if redis.call('GET', K_LEASE) == token then redis.call('DEL', K_LEASE) end
end

local new = deleted + absent + failed + skipped
local batch_done, finished, first, n = 0, 0, 0, 0
if before < #ids and before + new >= #ids then
  batch_done = 1
  redis.call('HINCRBY', K_JOB, 'batches_done', 1)
  redis.call('ZREM', K_INFLIGHT, index)
  if redis.call('HGET', K_JOB, 'state') == 'running' then
    first, n = reserve(window)
    if n > 0 then redis.call('HSET', K_CLAIMS, 'n:' .. index, first .. ',' .. n) end
  end
  finished = finish_if_complete(retention, K_EVENTS)
end
return {new, batch_done, finished, first, n}
