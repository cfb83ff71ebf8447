local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local tokens = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local nd, nk_limits, nkeys = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local nc, probe_ms = tonumber(ARGV[8]), tonumber(ARGV[9])
local caller_tokens = tonumber(ARGV[10])
local base = 10
-- Cool-downs still running are reported; ended ones are dropped, except a
-- tripped circuit's: it stays until a probe closes it (half-open), and the
-- first admitted check claims that probe below.
local cooling = {}
local circuit_due = false
local state = redis.call('HGETALL', KEYS[1])
for j = 1, #state, 2 do
  local left = tonumber(state[j + 1]) - now_ms
  if left > 0 then
    cooling[#cooling + 1] = state[j]
    cooling[#cooling + 1] = left
  elseif state[j] == 'circuit' then
    circuit_due = true
  else
    redis.call('HDEL', KEYS[1], state[j])
  end
end
local caller_taken, probe = 0, 0
local function answer(code, x, y, z)
  local head = {code, x, y, z, now_us, caller_taken, probe}
  for _, v in ipairs(cooling) do head[#head + 1] = v end
  return head
end
-- Window `key` against limit number `a` (1-based among ARGV's triples):
-- fits, and the bucket and amount to add; or the wait until it would.
local function check(key, a, toks)
  local limit = tonumber(ARGV[base + 3 * a - 2])
  local width = tonumber(ARGV[base + 3 * a - 1])
  local need = 1
  if ARGV[base + 3 * a] == '1' then need = toks end
  local now = math.floor(now_us / width)
  local fields = redis.call('HGETALL', key)
  local used, live = 0, {}
  for j = 1, #fields, 2 do
    local slot = tonumber(fields[j])
    local count = tonumber(fields[j + 1])
    if slot + 60 < now then
      redis.call('HDEL', key, fields[j])
    elseif slot <= now then
      used = used + count
      live[#live + 1] = {slot, count}
    end
  end
  if used > 0 and used + need > limit then
    table.sort(live, function(x, y) return x[1] < y[1] end)
    local left, wait = used, width
    for _, b in ipairs(live) do
      left = left - b[2]
      if left <= 0 or left + need <= limit then
        wait = (b[1] + 61) * width - now_us
        break
      end
    end
    if wait < 1 then wait = 1 end
    return false, wait, used
  end
  return true, now, need, used
end
local function take(e)
  local key, a, slot, need = e[1], e[2], e[3], e[4]
  redis.call('HINCRBY', key, slot, need)
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[base + 3 * a - 1]) * 62 / 1000))
end
-- The client key's windows first: refused there, nothing is taken; taken,
-- they hold whatever the deployment's answer (the request was made).
if nc > 0 then
  local first_key = 2 + nd + nkeys * nk_limits
  local tries = {}
  for c = 1, nc do
    local a = nd + nk_limits + c
    local ok, x, y, used = check(KEYS[first_key + c], a, caller_tokens)
    if not ok then return answer(4, c, x, y) end
    tries[#tries + 1] = {KEYS[first_key + c], a, x, y, used}
  end
  for _, e in ipairs(tries) do take(e) end
  caller_taken = 1
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) >= cap then return answer(2, cap, 0, 0) end
end
local taking = {}
for d = 1, nd do
  local ok, x, y, used = check(KEYS[2 + d], d, tokens)
  if not ok then return answer(0, d, x, y) end
  taking[#taking + 1] = {KEYS[2 + d], d, x, y, used}
end
local chosen = 0
if nkeys > 0 then
  local soonest = nil
  for c = 1, nkeys do
    local fits, tries = true, {}
    for l = 1, nk_limits do
      local key = KEYS[2 + nd + (c - 1) * nk_limits + l]
      local ok, x, y, used = check(key, nd + l, tokens)
      if not ok then
        fits = false
        if soonest == nil or x < soonest then soonest = x end
        break
      end
      tries[#tries + 1] = {key, nd + l, x, y, used}
    end
    if fits then
      chosen = c
      for _, e in ipairs(tries) do taking[#taking + 1] = e end
      break
    end
  end
  if chosen == 0 then return answer(3, soonest or 1, 0, 0) end
end
local headroom = 1000
for _, e in ipairs(taking) do
  take(e)
  local a, need, used = e[2], e[4], e[5]
  if a <= nd then
    local h = 1000 - math.floor((used + need) * 1000 / tonumber(ARGV[base + 3 * a - 2]))
    if h < headroom then headroom = h end
  end
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 1000)
end
-- A circuit whose cool-down ended: this request is its one probe; the
-- others keep away until it closes the circuit or the probe window ends.
if circuit_due and probe_ms > 0 then
  redis.call('HSET', KEYS[1], 'circuit', now_ms + probe_ms)
  if redis.call('PTTL', KEYS[1]) < probe_ms + 30000 then
    redis.call('PEXPIRE', KEYS[1], probe_ms + 30000)
  end
  probe = 1
end
if headroom < 0 then headroom = 0 end
return answer(1, headroom, chosen, 0)
