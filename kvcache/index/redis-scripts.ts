/**
 * The Lua side of the Redis prefix index. Under the key prefix P (ARGV[1]) every (block, engine) entry lives in
 * three structures, kept consistent because only these scripts write them and each runs atomically:
 *
 *   P b:<hash>    HASH   engine -> clock          who holds the block (what MATCH reads)
 *   P e:<engine>  ZSET   hash -> clock            the engine's blocks by last-seen (what the capacity trim cuts)
 *   P lru         ZSET   <hash><engine> -> clock  every entry by last-seen (what the global bound cuts)
 *   P cap         HASH   engine -> blocks         capacities set with setCapacity (absent: unbounded)
 *   P clock       STRING counter                  the logical clock: last-seen times are its values
 *
 * <hash> is the block hash as 8 big-endian bytes. The clock is a counter rather than a wall time so that every
 * router replica orders entries the same way, and so that the blocks of one recordStored get distinct times:
 * deepest block oldest, the root newest, which makes trimming cut chains from the leaf (as vLLM evicts a
 * request's tail blocks first).
 *
 * Nothing carries a TTL: memory is bounded by the global bound (entries of all engines together) and per engine
 * by its capacity, and an engine that vanished without clearEngine stops being refreshed and so is trimmed first.
 * Keys are built inside the scripts, so this targets a single Redis (or a primary with replicas), not a cluster.
 */

/** ARGV: prefix, hashes (8 bytes each, root first). Returns engine, count, engine, count... */
export const MATCH_SCRIPT = `
local P = ARGV[1]
local hashes = ARGV[2]
local n = #hashes / 8
local matched = {}
local engines = redis.call('HKEYS', P .. 'b:' .. string.sub(hashes, 1, 8))
for _, engine in ipairs(engines) do matched[engine] = 1 end
-- An engine is still in the running after block i only if it held blocks 0..i; stop when none is.
local running = #engines
local i = 1
while running > 0 and i < n do
  running = 0
  for _, engine in ipairs(redis.call('HKEYS', P .. 'b:' .. string.sub(hashes, i * 8 + 1, i * 8 + 8))) do
    if matched[engine] == i then
      matched[engine] = i + 1
      running = running + 1
    end
  end
  i = i + 1
end
local reply = {}
for _, engine in ipairs(engines) do
  reply[#reply + 1] = engine
  reply[#reply + 1] = matched[engine]
end
return reply
`;

/**
 * ARGV: prefix, maxEntries, removal budget, then operations as triples (op, engine, payload):
 *   s  stored    payload: hashes, root first
 *   r  removed   payload: hashes
 *   c  cleared   payload: ''
 *   k  capacity  payload: blocks, in decimal
 * Returns how many operations were completed. Removals (trims and clears) stop when the budget is spent, so one
 * call never holds Redis for long; the caller sends the operations from the first unfinished one again, which is
 * safe because each operation can be repeated.
 */
export const FLUSH_SCRIPT = `
local P = ARGV[1]
local maxEntries = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local LRU = P .. 'lru'
local CAP = P .. 'cap'

local function forget(engine, h)
  redis.call('HDEL', P .. 'b:' .. h, engine)
  redis.call('ZREM', P .. 'e:' .. engine, h)
  redis.call('ZREM', LRU, h .. engine)
end

-- Forgets the engine's oldest entries beyond keep; false if the budget ran out first.
local function trim(engine, keep)
  local ekey = P .. 'e:' .. engine
  local excess = redis.call('ZCARD', ekey) - keep
  if excess <= 0 then return true end
  local n = math.min(excess, budget)
  if n > 0 then
    for _, h in ipairs(redis.call('ZRANGE', ekey, 0, n - 1)) do forget(engine, h) end
    budget = budget - n
  end
  return n == excess
end

local done = 0
for i = 4, #ARGV, 3 do
  local op, engine, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 's' then
    local count = #payload / 8
    local clock = redis.call('INCRBY', P .. 'clock', count)
    local ekey = P .. 'e:' .. engine
    for j = 1, count do
      local h = string.sub(payload, j * 8 - 7, j * 8)
      local t = clock - j + 1
      redis.call('HSET', P .. 'b:' .. h, engine, t)
      redis.call('ZADD', ekey, t, h)
      redis.call('ZADD', LRU, t, h .. engine)
    end
    local capacity = redis.call('HGET', CAP, engine)
    if capacity and not trim(engine, tonumber(capacity)) then return done end
  elseif op == 'r' then
    local ekey = P .. 'e:' .. engine
    for j = 1, #payload / 8 do
      local h = string.sub(payload, j * 8 - 7, j * 8)
      if redis.call('HDEL', P .. 'b:' .. h, engine) == 1 then
        redis.call('ZREM', ekey, h)
        redis.call('ZREM', LRU, h .. engine)
      end
    end
  elseif op == 'c' then
    if not trim(engine, 0) then return done end
  elseif op == 'k' then
    redis.call('HSET', CAP, engine, payload)
    if not trim(engine, tonumber(payload)) then return done end
  end
  done = done + 1
end

local excess = math.min(redis.call('ZCARD', LRU) - maxEntries, budget)
if excess > 0 then
  local victims = redis.call('ZPOPMIN', LRU, excess)
  for k = 1, #victims, 2 do
    local h = string.sub(victims[k], 1, 8)
    local engine = string.sub(victims[k], 9)
    redis.call('HDEL', P .. 'b:' .. h, engine)
    redis.call('ZREM', P .. 'e:' .. engine, h)
  end
end
return done
`;
