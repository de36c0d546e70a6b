-- The fleet's wake-up call (every worker's keeper, every few seconds; producers after a
-- submit or a resume): record this worker's heartbeat, work out how many drain runs the
-- fleet wants (the slots of its live workers), and, when some job is runnable, create the
-- tickets of the drain runs missing. The caller publishes one drain message per ticket;
-- a ticket whose message is lost lapses after ARGV[3] ms and is replaced here.
-- ARGV: prefix, worker id ('' for none), ticket_ttl_ms, this worker's slots, heartbeat_ms,
--       most tickets to create.
-- Returns the new tickets.
local P, worker = ARGV[1], ARGV[2]
local ttl, slots, beat, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local workers, drains = P .. ':workers', P .. ':drains'
if worker ~= '' then
  redis.call('ZADD', workers, now + beat, worker)
  redis.call('HSET', workers .. ':slots', worker, slots)
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', now)) do
  redis.call('HDEL', workers .. ':slots', w)
end
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
local desired = 0
for _, n in ipairs(redis.call('HVALS', workers .. ':slots')) do desired = desired + tonumber(n) end
desired = math.max(desired, 1)
redis.call('SET', drains .. ':desired', desired)
redis.call('ZREMRANGEBYSCORE', drains, '-inf', now)
local runnable = 0
for _, priority in ipairs({'high', 'normal', 'low'}) do
  runnable = runnable + redis.call('ZCARD', P .. ':run:' .. priority)
end
if runnable == 0 then return {} end
local tickets = {}
for _ = 1, math.min(desired - redis.call('ZCARD', drains), most) do
  local ticket = tostring(redis.call('INCR', drains .. ':seq'))
  redis.call('ZADD', drains, now + ttl, ticket)
  tickets[#tickets + 1] = ticket
end
return tickets
