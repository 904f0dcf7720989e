-- The one wrk load script of `make bench` (bench/raftkv_vs_etcd.py runs it with -t1).
--
--   wrk -t1 -cC -dDs --latency -s bench/wrk/load.lua http://HOST:PORT -- MODE TAG KEYS MAX SEED
--
-- MODE picks the request:
--   health        GET  /health                          raftkv ceiling (no Raft work)
--   version       GET  /version                         etcd ceiling (no Raft work)
--   rk_write      POST /keys/<k>/  {"value": "<v>"}     raftkv write
--   rk_read       GET  /keys/<k>/                       raftkv linearizable read
--   rk_stale      GET  /keys/<k>/?stale                 raftkv stale read
--   e3_put        POST /v3/kv/put   {"key","value"}     etcd v3 put (base64 JSON, gRPC gateway)
--   e3_range      POST /v3/kv/range {"key"}             etcd v3 linearizable range
--   e3_range_ser  POST /v3/kv/range {"key","serializable":true}   etcd v3 serializable range
--   e2_put        PUT  /v2/keys/<k>  value=<v>          etcd v2 put (form body)
--   e2_get        GET  /v2/keys/<k>                     etcd v2 read (local: stale)
-- Every request picks a key uniformly from a pool of KEYS keys, key-%012d (16 bytes), and the
-- ceiling modes do the same work on the client so that the cells cost wrk alike. A written value
-- is 32 bytes, "<id %05d>.<TAG>.<seq %010d>." padded with x: it names its key, the cell (TAG, two
-- characters) and the request's sequence number, which is how the driver checks afterwards that
-- every stored value was really written by this load to that key.
--
-- MAX bounds the requests a thread sends (the thread stops itself); -d bounds the time.
-- done() prints one machine-readable line:
--   BENCH_RESULT {"requests":..,"duration_us":..,"rps":..,"p50_us":..,"p99_us":..,
--                 "non2xx":..,"connect":..,"read":..,"write":..,"timeout":..,"max_seq":..}
-- "non2xx" is wrk's status error count (responses with status > 399).

local mode, tag, nkeys, max_requests = "health", "zz", 10000, 1000000
seq = 0 -- a global: done() reads it with thread:get("seq")
local keys, keys_b64, reqs = {}, {}, {}
local json_headers = { ["Content-Type"] = "application/json" }
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64 = {}
for i = 1, 64 do b64[i - 1] = b64chars:sub(i, i) end

local function base64(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = b64[math.floor(v / 262144) % 64]
    out[#out + 1] = b64[math.floor(v / 4096) % 64]
    out[#out + 1] = b and b64[math.floor(v / 64) % 64] or "="
    out[#out + 1] = c and b64[v % 64] or "="
  end
  return table.concat(out)
end

local function value_for(id)
  seq = seq + 1
  local v = string.format("%05d.%s.%010d.", id, tag, seq)
  return v .. string.rep("x", 32 - #v)
end

function init(args)
  mode = args[1] or mode
  tag = args[2] or tag
  nkeys = tonumber(args[3] or nkeys)
  max_requests = tonumber(args[4] or max_requests)
  math.randomseed(tonumber(args[5] or 1))
  for id = 0, nkeys - 1 do
    local k = string.format("key-%012d", id)
    keys[id] = k
    if mode:sub(1, 3) == "e3_" then keys_b64[id] = base64(k) end
  end
  -- Reads and ceilings send the same bytes for a key every time: build them once.
  for id = 0, nkeys - 1 do
    local k = keys[id]
    if mode == "health" then
      reqs[id] = wrk.format("GET", "/health")
    elseif mode == "version" then
      reqs[id] = wrk.format("GET", "/version")
    elseif mode == "rk_read" then
      reqs[id] = wrk.format("GET", "/keys/" .. k .. "/")
    elseif mode == "rk_stale" then
      reqs[id] = wrk.format("GET", "/keys/" .. k .. "/?stale")
    elseif mode == "e3_range" then
      reqs[id] = wrk.format("POST", "/v3/kv/range", json_headers,
        '{"key":"' .. keys_b64[id] .. '"}')
    elseif mode == "e3_range_ser" then
      reqs[id] = wrk.format("POST", "/v3/kv/range", json_headers,
        '{"key":"' .. keys_b64[id] .. '","serializable":true}')
    elseif mode == "e2_get" then
      reqs[id] = wrk.format("GET", "/v2/keys/" .. k)
    end
  end
end

function request()
  if seq >= max_requests then
    wrk.thread:stop()
  end
  local id = math.random(0, nkeys - 1)
  local r = reqs[id]
  if r then
    seq = seq + 1
    return r
  end
  if mode == "rk_write" then
    return wrk.format("POST", "/keys/" .. keys[id] .. "/", json_headers,
      '{"value":"' .. value_for(id) .. '"}')
  elseif mode == "e3_put" then
    return wrk.format("POST", "/v3/kv/put", json_headers,
      '{"key":"' .. keys_b64[id] .. '","value":"' .. base64(value_for(id)) .. '"}')
  elseif mode == "e2_put" then
    return wrk.format("PUT", "/v2/keys/" .. keys[id], form_headers, "value=" .. value_for(id))
  end
  error("unknown mode " .. mode)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local max_seq = 0
  for _, t in ipairs(threads) do
    local s = t:get("seq") or 0
    if s > max_seq then max_seq = s end
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,' ..
    '"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"max_seq":%d}\n',
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, max_seq))
end
