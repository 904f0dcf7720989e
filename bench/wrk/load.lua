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

-- A written value: "<id %05d>.<TAG>.<seq %010d>." and 12 x, 32 bytes (ids below 100,000,
-- a two-character tag). A write request is built in one string.format: the bytes around the
-- value are fixed per key, so init() builds them once (heads, tail). Building each request
-- with wrk.format cost wrk about 7 us of CPU per request, on the cores the servers share.
local heads, tail, value_fmt = {}, "", ""

-- The request for a body of `before`, n bytes of value and `after`, cut at the value.
local function head_of(method, path, headers, before, n, after)
  local body = before .. "\1" .. string.rep("v", n - 1) .. after
  local full = wrk.format(method, path, headers, body)
  return full:sub(1, full:find("\1", #full - #body + 1, true) - 1)
end

-- etcd v3 takes the value in base64. Bytes 9..20 of a value are its ten sequence digits, "."
-- and "x": the 3-byte groups at 9, 12 and 15 are three digits each and the one at 18 is a
-- digit, "." and "x", so their base64 comes from two tables. Bytes 0..8 are fixed per key
-- (in heads) and bytes 21..31 are x (in tail).
local b64_3digits, b64_digit_dot_x = {}, {}

local function put_request(id)
  seq = seq + 1
  if mode == "e3_put" then
    local s = seq
    return heads[id] .. b64_3digits[math.floor(s / 10000000) % 1000] ..
      b64_3digits[math.floor(s / 10000) % 1000] .. b64_3digits[math.floor(s / 10) % 1000] ..
      b64_digit_dot_x[s % 10] .. tail
  end
  return string.format(value_fmt, heads[id], id, seq)
end

local function build_put_requests()
  if nkeys > 100000 or #tag ~= 2 then
    error("write modes need at most 100000 keys and a two-character tag")
  end
  local x12 = string.rep("x", 12)
  if mode == "e3_put" then
    for n = 0, 999 do b64_3digits[n] = base64(string.format("%03d", n)) end
    for d = 0, 9 do b64_digit_dot_x[d] = base64(d .. ".x") end
    tail = base64(string.rep("x", 11)) .. '"}'
  elseif mode == "rk_write" then
    tail = '"}'
  end
  value_fmt = "%s%05d." .. tag .. ".%010d." .. x12 .. tail
  for id = 0, nkeys - 1 do
    local k = keys[id]
    if mode == "rk_write" then
      heads[id] = head_of("POST", "/keys/" .. k .. "/", json_headers, '{"value":"', 32, tail)
    elseif mode == "e2_put" then
      heads[id] = head_of("PUT", "/v2/keys/" .. k, form_headers, "value=", 32, "")
    elseif mode == "e3_put" then
      local before = '{"key":"' .. keys_b64[id] .. '","value":"'
      -- Of the value's 44 base64 characters, tail holds the last 16: 12 are fixed per key
      -- (appended to the head) and 16 come from the sequence number.
      heads[id] = head_of("POST", "/v3/kv/put", json_headers, before, 28, tail) ..
        base64(string.format("%05d.%s.", id, tag))
    end
  end
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
  if mode == "rk_write" or mode == "e2_put" or mode == "e3_put" then build_put_requests() end
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
  if heads[id] then return put_request(id) end
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
