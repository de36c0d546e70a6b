-- The store may have lost its last writes (Redis restarted: AOF everysec loses up to a
-- second, a failover loses what the replica had not received). Batches taken in that
-- window may have been sent while the store no longer says so: for every unfinished job,
-- mark the next ARGV[2] batches after its frontier as possibly sent, so that a stop never
-- counts them not_attempted unconfirmed. Every lease is void too: a lease the loss
-- restored may belong to a run another run replaced in the lost window (which deleted
-- the ids): its holder's next renewal or commit is refused, and the batch, possibly sent,
-- is taken again. ARGV: prefix, margin (batches). Returns jobs marked.
local P, margin = ARGV[1], tonumber(ARGV[2])
local marked = 0
for _, job in ipairs(redis.call('ZRANGE', P .. ':active', 0, -1)) do
  bind(job_keys(P, job))
  local next, total = hnum(K_JOB, 'next'), hnum(K_JOB, 'batches_total')
  for index = next, math.min(total, next + margin) - 1 do redis.call('SADD', K_SENT, index) end
  for _, j in ipairs(redis.call('HKEYS', K_OWNERS)) do
    redis.call('SADD', K_SENT, j)
    redis.call('ZADD', K_PENDING, 0, j)
  end
  redis.call('DEL', K_OWNERS)
  if total > next then marked = marked + 1 end
end
return marked
