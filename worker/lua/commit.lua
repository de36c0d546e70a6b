-- Commit outcomes of batch ARGV[1] for the run holding its lease (token ARGV[2]): each id
-- is counted the first time it gets an outcome and never again. A run that lost its lease
-- (it lapsed and another run took the batch) commits nothing: reply status 'lost'.
-- ARGV: index, token, payload (JSON): deleted = [pos], not_found = [pos],
--   failed = [[pos, reason]], not_attempted = [[pos, reason]], hd / ld vector counts,
--   attempts (failed API attempts), requests, rate_limited, retries, operation_id,
--   last_error, release = 'keep' (the run goes on) | 'later' (hand the batch back;
--   takeable again in later_ms; unsent = true: no request was ever sent for it).
-- Reply (named): status (ok | lost), counted, batch_done (0/1), job_finished (0/1), state.
local index, token = tonumber(ARGV[1]), ARGV[2]
local p = cjson.decode(ARGV[3])
local state = redis.call('HGET', K_JOB, 'state')
if not state or redis.call('HGET', K_OWNERS, index) ~= token then
  return record({status = 'lost', state = state or 'gone'})
end
local ids = batch_ids(index)
local function check(pos)
  if type(pos) ~= 'number' or pos < 0 or pos >= #ids or pos % 1 ~= 0 then
    error('position out of range: ' .. tostring(pos))
  end
end
for _, pos in ipairs(p.deleted) do check(pos) end
for _, pos in ipairs(p.not_found) do check(pos) end
for _, e in ipairs(p.failed) do check(e[1]) end
for _, e in ipairs(p.not_attempted) do check(e[1]) end

local new, deleted = 0, 0
for _, pos in ipairs(p.deleted) do deleted = deleted + resolve(index, pos, ids[pos + 1], 'deleted') end
for _, pos in ipairs(p.not_found) do new = new + resolve(index, pos, ids[pos + 1], 'not_found') end
for _, e in ipairs(p.failed) do new = new + resolve(index, e[1], ids[e[1] + 1], 'failed', e[2]) end
for _, e in ipairs(p.not_attempted) do
  new = new + resolve(index, e[1], ids[e[1] + 1], 'not_attempted', e[2])
end
new = new + deleted

local function add(field, n) if n ~= 0 then redis.call('HINCRBY', K_JOB, field, n) end end
if deleted > 0 then
  -- Vector counts belong to the answer that deleted the ids; an answer whose ids were all
  -- counted already is a replay and adds nothing.
  add('hd_vectors', p.hd)
  add('ld_vectors', p.ld)
end
add('rate_limited', p.rate_limited)
add('retries', p.retries)
add('requests', p.requests)
if p.attempts > 0 then redis.call('HINCRBY', K_ATTEMPTS, index, p.attempts) end
if p.operation_id ~= '' then redis.call('HSET', K_OPS, index, p.operation_id) end
if p.last_error ~= '' then redis.call('HSET', K_JOB, 'last_error', p.last_error) end

local batch_done, finished = 0, 0
if resolved_count(index) >= #ids then
  batch_done = 1
  finished = batch_finished(index)
elseif p.release == 'later' then
  redis.call('ZADD', K_PENDING, now_ms() + p.later_ms, index)
  redis.call('HDEL', K_OWNERS, index)
  -- take.lua marked it possibly sent; a stop may count a batch never sent not_attempted.
  if p.unsent then redis.call('SREM', K_SENT, index) end
end
return record({status = 'ok', counted = new, batch_done = batch_done, job_finished = finished,
               state = redis.call('HGET', K_JOB, 'state')})
