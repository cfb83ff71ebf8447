-- wrk script for scripts/load: POSTs one small non-streamed chat request and,
-- when the run ends, prints one machine-readable line that scripts/load
-- parses (wrk's own text summary rounds percentiles and is harder to read).
--
-- The model is the load test's route name; the mock upstream answers any
-- model, so the same script serves both the direct and the gateway runs.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"load","messages":['
    .. '{"role":"system","content":"You are a helpful assistant."},'
    .. '{"role":"user","content":"What is the capital of France? Answer in one sentence."}'
    .. '],"max_tokens":64,"temperature":0.2}'

-- LOAD_MODEL=NAME: the same request to another route.
local model = os.getenv("LOAD_MODEL")
if model then
    wrk.body = wrk.body:gsub('^{"model":"load"', '{"model":"' .. model .. '"', 1)
end

-- LOAD_AUTH=KEY: sent as a client key (scripts/load sets it for LOAD_CLIENT_KEY=1).
local auth = os.getenv("LOAD_AUTH")
if auth then
    wrk.headers["Authorization"] = "Bearer " .. auth
end

-- LOAD_STREAM=1: the same request, streamed (SSE); scripts/load drives streams
-- with tools/loadgen instead, which also times the first chunk.
if os.getenv("LOAD_STREAM") == "1" then
    wrk.body = wrk.body:sub(1, -2) .. ',"stream":true}'
end

-- Latencies are in microseconds; `status` counts responses with status >= 400.
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "LOADRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d "
            .. "connect=%d read=%d write=%d status=%d timeout=%d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        e.connect, e.read, e.write, e.status, e.timeout))
end
