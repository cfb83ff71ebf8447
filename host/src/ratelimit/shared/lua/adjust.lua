if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
  if v < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
end
return 1
