local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local cooling = {}
local state = redis.call('HGETALL', KEYS[1])
for j = 1, #state, 2 do
  local left = tonumber(state[j + 1]) - now_ms
  if left > 0 then
    cooling[#cooling + 1] = state[j]
    cooling[#cooling + 1] = left
  else
    redis.call('HDEL', KEYS[1], state[j])
  end
end
local function answer(head)
  for _, v in ipairs(cooling) do head[#head + 1] = v end
  return head
end
local tokens = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local nd, nk_limits, nkeys = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) >= cap then return answer({2, cap}) end
end
-- Window `key` against limit number `a` (1-based among ARGV's triples):
-- fits, and the bucket and amount to add; or the wait until it would.
local function check(key, a)
  local limit = tonumber(ARGV[7 + 3 * a - 2])
  local width = tonumber(ARGV[7 + 3 * a - 1])
  local need = 1
  if ARGV[7 + 3 * a] == '1' then need = tokens end
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
local take = {}
for d = 1, nd do
  local ok, x, y, used = check(KEYS[2 + d], d)
  if not ok then return answer({0, d, x, y}) end
  take[#take + 1] = {KEYS[2 + d], d, x, y, used}
end
local chosen = 0
if nkeys > 0 then
  local soonest = nil
  for c = 1, nkeys do
    local fits, tries = true, {}
    for l = 1, nk_limits do
      local key = KEYS[2 + nd + (c - 1) * nk_limits + l]
      local ok, x, y, used = check(key, nd + l)
      if not ok then
        fits = false
        if soonest == nil or x < soonest then soonest = x end
        break
      end
      tries[#tries + 1] = {key, nd + l, x, y, used}
    end
    if fits then
      chosen = c
      for _, e in ipairs(tries) do take[#take + 1] = e end
      break
    end
  end
  if chosen == 0 then return answer({3, soonest or 1}) end
end
local headroom = 1000
for _, e in ipairs(take) do
  local key, a, slot, need, used = e[1], e[2], e[3], e[4], e[5]
  redis.call('HINCRBY', key, slot, need)
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[7 + 3 * a - 1]) * 62 / 1000))
  if a <= nd then
    local h = 1000 - math.floor((used + need) * 1000 / tonumber(ARGV[7 + 3 * a - 2]))
    if h < headroom then headroom = h end
  end
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 1000)
end
if headroom < 0 then headroom = 0 end
return answer({1, headroom, now_us, chosen})
