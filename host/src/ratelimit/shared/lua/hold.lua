local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local n = #KEYS / 2
local out = {}
for i = 1, n do
  if tonumber(ARGV[2 + i]) > 0 then
    redis.call('HSET', KEYS[i], ARGV[1], ARGV[2 + i] .. ':' .. (now_ms + ttl))
  else
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
  local others = 0
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    local v = fields[j + 1]
    local sep = string.find(v, ':', 1, true)
    local held = tonumber(string.sub(v, 1, sep - 1))
    if tonumber(string.sub(v, sep + 1)) <= now_ms then
      redis.call('HDEL', KEYS[i], fields[j])
    elseif fields[j] ~= ARGV[1] then
      others = others + held
    end
  end
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
  out[#out + 1] = tostring(others)
  out[#out + 1] = redis.call('GET', KEYS[n + i]) or '0'
end
return out
