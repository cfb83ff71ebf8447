local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if until_ms > old then redis.call('HSET', KEYS[1], ARGV[1], until_ms) end
local ttl = redis.call('PTTL', KEYS[1])
-- Kept 30 s past the cool-down: an ended circuit's entry is where the
-- replicas claim its one probe (reserve.lua).
if ttl < tonumber(ARGV[2]) + 30000 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 30000) end
return 1
