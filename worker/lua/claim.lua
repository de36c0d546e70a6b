-- Claim batch ARGV[1] for one run (token ARGV[2]), before any API call.
-- Extra KEYS: [N+1] the batch's lease key.  ARGV: index, token, lease_ms, max_deliveries.
-- Returns {verdict, state, packed ids, resolved mask ('0'/'1' per id), attempts, uncertain,
--          extra, the job's reason, the job's last error, the job's key alias, the job's own
--          rate limit ('' for none: the fleet's alone)}.
-- verdicts: gone (no such job/batch), done (every id has its outcome: nothing to send),
-- parked (the job is paused: the batch waits in the parked set, the message is done),
-- busy (another live run owns it), poison (too many runs died), ok.
-- The last element: busy -> lease ms left; done -> unfinished successors 'i,j,...';
-- ok/poison -> how many runs claimed it without a verdict, this one included.
local index, token = tonumber(ARGV[1]), ARGV[2]
local lease_ms, max_deliveries = tonumber(ARGV[3]), tonumber(ARGV[4])
local K_LEASE = KEYS[N_JOB_KEYS + 1]

local state = redis.call('HGET', K_JOB, 'state')
local packed = redis.call('HGET', K_BATCHES, index)
if not state or not packed then return {'gone', state or ''} end

local size = select(2, string.gsub(packed, '\n', '')) + 1
if resolved_count(index) >= size then
  -- A redelivery after the commit: hand back the successors this batch reserved, so a
  -- run that died between its commit and its publish still gets them published.
  -- Only successors still unfinished: a duplicate must not walk the whole job.
  local range = redis.call('HGET', K_CLAIMS, 'n:' .. index) or ''
  local left = {}
  local first, n = string.match(range, '^(%d+),(%d+)$')
  for j = tonumber(first or 0), tonumber(first or 0) + tonumber(n or 0) - 1 do
    if resolved_count(j) < batch_size(j) then left[#left + 1] = j end
  end
  return {'done', state, '', '', 0, 0, table.concat(left, ',')}
end

if state == 'paused' then
  -- Set aside, atomically with the state check: resume publishes every parked batch.
  redis.call('SADD', K_PARKED, index)
  redis.call('ZREM', K_INFLIGHT, index)
  return {'parked', state}
end

if not redis.call('SET', K_LEASE, token, 'NX', 'PX', lease_ms) then
  if redis.call('GET', K_LEASE) ~= token then
    return {'busy', state, '', '', 0, 0, tostring(redis.call('PTTL', K_LEASE))}
  end
end

-- Runs that ended without a verdict (crashed, killed) are counted until a commit resets
-- them: past max_deliveries the batch is poison. Any such run may have deleted ids.
local runs = redis.call('HINCRBY', K_CLAIMS, index, 1)
if runs > 1 then redis.call('SADD', K_UNCERTAIN, index) end

local first = index * STRIDE / 8
local bits = redis.call('GETRANGE', K_RESOLVED, first, first + STRIDE / 8 - 1)
local mask = {}
for k = 0, size - 1 do
  local byte = string.byte(bits, math.floor(k / 8) + 1) or 0
  local bit = math.floor(byte / 2 ^ (7 - k % 8)) % 2
  mask[#mask + 1] = bit == 1 and '1' or '0'
end

local verdict = runs > max_deliveries and 'poison' or 'ok'
return {verdict, state, packed, table.concat(mask), hnum(K_ATTEMPTS, index),
        redis.call('SISMEMBER', K_UNCERTAIN, index), tostring(runs),
        redis.call('HGET', K_JOB, 'reason') or '', redis.call('HGET', K_JOB, 'last_error') or '',
        redis.call('HGET', K_JOB, 'key_alias') or 'default', redis.call('HGET', K_JOB, 'rate') or ''}
