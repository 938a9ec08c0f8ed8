-- wrk script for Schooner's benchmark: POSTs {"input": [N floats]} and reports a JSON line.
--
-- Arguments (after the URL, `wrk ... URL -- MODE N`):
--   MODE  "random"   a fresh random input per request, so no prediction cache can answer it
--         "constant" the same body every time (the cache-hit path)
--         "v2"       a fresh random input per request as an Open Inference Protocol
--                    request (a [1, N] FP64 tensor, JSON), for /v2/models/{app}/infer
--   N     number of floats per input (default 10)
--
-- SCHOONER_BENCH_API_KEY in the environment: sent as "Authorization: Bearer <key>".
--
-- response() counts non-2xx answers and bodies containing "default":true (Schooner's
-- answer when a query misses its SLO; "default":[true in a V2 answer's parameters); done() sums them over the threads and prints one
-- line, BENCH_JSON {...}, that benchmarks/wrk.py parses.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local mode = "random"
local nfeatures = 10
local headers = { ["Content-Type"] = "application/json" }
-- An app's API key, from the environment (never the command line, where ps shows it).
local api_key = os.getenv("SCHOONER_BENCH_API_KEY")
if api_key ~= nil and api_key ~= "" then
  headers["Authorization"] = "Bearer " .. api_key
end
local constant_request = nil
non2xx = 0
defaults = 0
responses = 0

function init(args)
  if args[1] ~= nil then mode = args[1] end
  if args[2] ~= nil then nfeatures = tonumber(args[2]) end
  math.randomseed(os.time() * 1000 + (id or 0))
  if mode == "constant" then
    local xs = {}
    for i = 1, nfeatures do xs[i] = string.format("%.3f", i / 10) end
    constant_request = wrk.format("POST", nil, headers, '{"input":[' .. table.concat(xs, ",") .. ']}')
  elseif mode ~= "random" and mode ~= "v2" then
    error("post.lua: MODE must be 'random', 'constant' or 'v2', not " .. tostring(mode))
  end
end

function request()
  if constant_request ~= nil then
    return constant_request
  end
  local xs = {}
  for i = 1, nfeatures do xs[i] = string.format("%.6f", math.random() * 2 - 1) end
  if mode == "v2" then
    return wrk.format("POST", nil, headers,
      '{"inputs":[{"name":"input","shape":[1,' .. nfeatures .. '],"datatype":"FP64","data":['
        .. table.concat(xs, ",") .. ']}]}')
  end
  return wrk.format("POST", nil, headers, '{"input":[' .. table.concat(xs, ",") .. ']}')
end

function response(status, hdrs, body)
  responses = responses + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if body ~= nil and (string.find(body, '"default":true', 1, true)
      or string.find(body, '"default":[true', 1, true)) then
    defaults = defaults + 1
  end
end

function done(summary, latency, requests)
  local n2, d, r = 0, 0, 0
  for _, t in ipairs(threads) do
    n2 = n2 + t:get("non2xx")
    d = d + t:get("defaults")
    r = r + t:get("responses")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"responses_seen":%d,"non2xx":%d,"defaults":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}}\n',
    summary.requests, summary.duration, summary.bytes, r, n2, d,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
