-- Take the next batch for a run, from any runnable job: high priority first, and within a
-- priority the job served longest ago (round robin: a small job behind a huge one gets
-- every other batch). limiter.lua is prepended: the batch comes with its send slot.
-- ARGV: prefix, token, ticket ('' for none), lease_ms, max_runs, max_wait_us, default
--       rate, burst, jobs scanned per priority, ticket_ttl_ms, priorities ('high,normal,low').
-- Which batch of a job: one handed back whose wait is over, or whose lease lapsed (its run
-- died: counted in `runs`, and past max_runs its ids fail as a crash loop); else the next
-- batch never taken. In a stopping job, batches never sent are closed not_attempted here,
-- and batches possibly sent are taken once more, to confirm what became of them.
-- Reply (named): kind = batch | wait (wait_ms: try again then) | idle (no runnable job) |
-- replaced (this drain ticket lapsed and others took its place: the run should end).
-- kind=batch adds job_id, index, ids, resolved ('0'/'1' per id), attempts, sent_before,
-- runs, state, reason, stop_reason, key_alias, wait_us (the send slot), rate.
local P, token, ticket = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, max_runs, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local default_rate, burst, scan = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local ticket_ttl = tonumber(ARGV[10])
local now = now_ms()

if ticket ~= '' then
  local drains = P .. ':drains'
  if not redis.call('ZSCORE', drains, ticket) then
    redis.call('ZREMRANGEBYSCORE', drains, '-inf', now)
    local desired = tonumber(redis.call('GET', drains .. ':desired') or '1')
    if redis.call('ZCARD', drains) >= desired then return record({kind = 'replaced'}) end
  end
  redis.call('ZADD', drains, now + ticket_ttl, ticket)
end

local soonest = -1
local function later(ms) if soonest < 0 or ms < soonest then soonest = ms end end
local refused = {}

-- The batch of the bound job to hand out, and why ('due', 'lapsed', 'new'), or nil.
local function pick(state)
  for _ = 1, 16 do  -- bounded: a stop or a crash loop closes batches here, a few per call
    local due = redis.call('ZRANGEBYSCORE', K_PENDING, '-inf', now, 'LIMIT', 0, 1)
    if #due == 0 then break end
    local index = tonumber(due[1])
    local lapsed = redis.call('HEXISTS', K_OWNERS, index) == 1
    local runs = hnum(K_RUNS, index) + (lapsed and 1 or 0)
    if state == 'stopping' and redis.call('SISMEMBER', K_SENT, index) == 0 then
      if close_batch(index, 'not_attempted', redis.call('HGET', K_JOB, 'stop_reason') or '')[2] == 1 then
        return nil
      end
    elseif runs > max_runs then
      redis.call('HSET', K_RUNS, index, runs)
      local why = 'worker_crash_loop: ' .. runs ..
        ' runs ended without a verdict (the API may have deleted some)'
      if close_batch(index, 'failed', why)[2] == 1 then return nil end
    else
      return index, lapsed and 'lapsed' or 'due', runs
    end
  end
  local next, total = hnum(K_JOB, 'next'), hnum(K_JOB, 'batches_total')
  if state ~= 'stopping' and next < total then return next, 'new', 0 end
  local first = redis.call('ZRANGE', K_PENDING, 0, 0, 'WITHSCORES')
  if #first > 0 then later(math.max(1, tonumber(first[2]) - now)) end
  return nil
end

-- A send slot for the bound job: its own limiter (rethrottle --job), then its key's.
local function slot(job, alias)
  if refused[alias] then later(refused[alias]); return nil end
  local wait, rate = 0, ''
  local own = redis.call('HGET', K_JOB, 'rate')
  if own then
    local r = limiter(P .. ':rl:job:' .. job, 'acquire', own, 1, max_wait, 0, 0)
    if r[1] < 0 then later(math.ceil(-r[1] / 1000)); return nil end
    wait = r[1]
  end
  local r = limiter(P .. ':rl:' .. alias, 'acquire', default_rate, burst, max_wait, 0, 0)
  if r[1] < 0 then
    refused[alias] = math.ceil(-r[1] / 1000)
    later(refused[alias])
    return nil
  end
  return math.max(wait, r[1]), r[2]
end

local function take_from(job, state, queue)
  local index, why, runs = pick(state)
  if index == nil then return nil end
  local alias = redis.call('HGET', K_JOB, 'key_alias') or 'default'
  local wait, rate = slot(job, alias)
  if wait == nil then return nil end
  if why == 'new' then redis.call('HINCRBY', K_JOB, 'next', 1) end
  if why == 'lapsed' then redis.call('HSET', K_RUNS, index, runs) end
  local sent_before = redis.call('SADD', K_SENT, index) == 0
  redis.call('ZADD', K_PENDING, now + math.ceil(wait / 1000) + lease_ms, index)
  redis.call('HSET', K_OWNERS, index, token)
  if state == 'queued' then
    state = 'running'
    redis.call('HSET', K_JOB, 'state', state, 'started_at', now)
  end
  redis.call('ZADD', queue, redis.call('INCR', P .. ':turn'), job)
  local mask = {}
  for k = 0, batch_size(index) - 1 do mask[#mask + 1] = is_resolved(index, k) and '1' or '0' end
  return record({
    kind = 'batch', job_id = job, index = index,
    ids = redis.call('HGET', K_BATCHES, index), resolved = table.concat(mask),
    attempts = hnum(K_ATTEMPTS, index), sent_before = sent_before and 1 or 0, runs = runs,
    state = state, reason = redis.call('HGET', K_JOB, 'reason') or '',
    stop_reason = redis.call('HGET', K_JOB, 'stop_reason') or '', key_alias = alias,
    wait_us = wait, rate = rate,
  })
end

local any = false
for priority in string.gmatch(ARGV[11], '[^,]+') do
  local queue = P .. ':run:' .. priority
  for _, job in ipairs(redis.call('ZRANGE', queue, 0, scan - 1)) do
    bind(job_keys(P, job))
    local state = redis.call('HGET', K_JOB, 'state')
    local runnable_at = hnum(K_JOB, 'runnable_at')
    if state ~= 'queued' and state ~= 'running' and state ~= 'stopping' then
      redis.call('ZREM', queue, job)  -- paused, finished or expired: not runnable
    elseif runnable_at > now then
      any = true
      later(runnable_at - now)  -- a resume not yet durable (resume.lua)
    else
      any = true
      local reply = take_from(job, state, queue)
      if reply then return reply end
    end
  end
end
if not any then return record({kind = 'idle'}) end
return record({kind = 'wait', wait_ms = soonest < 0 and 1000 or soonest})
