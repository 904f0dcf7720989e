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
--   rk1_put       PUT  /v1/kv/<k>  {"value": "<v>"}     raftkv /v1 put
--   rk1_get       GET  /v1/kv/<k>                       raftkv /v1 linearizable get
--   rk1_txn4      POST /v1/txn  4 puts                  raftkv transaction of 4 puts
--   e3_txn4       POST /v3/kv/txn  4 request_put        etcd transaction of 4 puts
--   rk1_range     GET  /v1/kv/<p>?prefix&limit=100      raftkv 100-key prefix range
--   e3_range100   POST /v3/kv/range {key,range_end,limit:100}   etcd 100-key range
-- The range modes read the 100 keys key-00000000XY00 .. XY99 (XY random; needs 10,000 keys).
-- The compare-and-swap modes (rk1_cas, e3_cas) are in cas.lua: they read every answer, and
-- a script that reads answers costs wrk time on every cell.
-- Every request picks a key uniformly from a pool of KEYS keys, key-%012d (16 bytes), and the
-- ceiling modes do the same work on the client so that the cells cost wrk alike. A written value
-- is 32 bytes, "<id %05d>.<TAG>.<seq %010d>." padded with x: it names its key, the cell (TAG, two
-- characters) and the request's sequence number, which is how the driver checks afterwards that
-- every stored value was really written by this load to that key.
--
-- MAX bounds the requests a thread sends (the thread stops itself); -d bounds the time.
-- done() prints one machine-readable line:
--   BENCH_RESULT {"requests":..,"duration_us":..,"rps":..,"p50_us":..,"p99_us":..,
--                 "p999_us":..,"max_us":..,"non2xx":..,"connect":..,"read":..,"write":..,"timeout":..,"max_seq":..}
-- "non2xx" is wrk's status error count (responses with status > 399).

local mode, tag, nkeys, max_requests = "health", "zz", 10000, 1000000
seq = 0 -- a global: done() reads it with thread:get("seq")
local keys, keys_b64, reqs = {}, {}, {}
local json_headers = { ["Content-Type"] = "application/json" }
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
b64chars_global = b64chars -- for cas.lua
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
base64_global = base64 -- for cas.lua

-- A written value: "<id %05d>.<TAG>.<seq %010d>." and 12 x, 32 bytes (ids below 100,000,
-- a two-character tag). The bytes around the sequence number are fixed per key, so init()
-- builds them once (heads, tail) and a request costs one string.format: building each with
-- wrk.format cost wrk about 7 us of CPU per request, on the cores the servers share.
-- etcd v3 takes the value in base64; bytes 9..20 (the ten digits, "." and "x") are four whole
-- 3-byte groups, so they encode alone, between the key's fixed groups and the x padding.
local heads, tail = {}, ""

-- The request for a body of `before`, n bytes of value and `after`, cut at the value.
local function head_of(method, path, headers, before, n, after)
  local body = before .. "\1" .. string.rep("v", n - 1) .. after
  local full = wrk.format(method, path, headers, body)
  return full:sub(1, full:find("\1", #full - #body + 1, true) - 1)
end

local function put_request(id)
  if mode == "e3_put" then
    return heads[id] .. base64(string.format("%010d.x", seq)) .. tail
  end
  return string.format("%s%05d.%s.%010d.xxxxxxxxxxxx%s", heads[id], id, tag, seq, tail)
end

local function build_put_requests()
  if nkeys > 100000 or #tag ~= 2 then
    error("write modes need at most 100000 keys and a two-character tag")
  end
  if mode == "e3_put" then
    tail = base64(string.rep("x", 11)) .. '"}'
  elseif mode == "rk_write" or mode == "rk1_put" then
    tail = '"}'
  end
  for id = 0, nkeys - 1 do
    local k = keys[id]
    if mode == "rk_write" then
      heads[id] = head_of("POST", "/keys/" .. k .. "/", json_headers, '{"value":"', 32, tail)
    elseif mode == "rk1_put" then
      heads[id] = head_of("PUT", "/v1/kv/" .. k, json_headers, '{"value":"', 32, tail)
    elseif mode == "e2_put" then
      heads[id] = head_of("PUT", "/v2/keys/" .. k, form_headers, "value=", 32, "")
    else
      -- Of the value's 44 base64 characters, 12 are fixed per key (appended to the head),
      -- 16 come from the sequence number and 16 are the padding's (in tail).
      local before = '{"key":"' .. keys_b64[id] .. '","value":"'
      heads[id] = head_of("POST", "/v3/kv/put", json_headers, before, 28, tail) ..
        base64(string.format("%05d.%s.", id, tag))
    end
  end
end

-- Transactions of 4 puts: distinct keys, each value names its own key (as put_request).
local function txn4_request()
  local ids, seen = {}, {}
  while #ids < 4 do
    local id = math.random(0, nkeys - 1)
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
  local puts = {}
  -- etcd's values in base64 as put_request builds them: the key's fixed 9 bytes (encoded
  -- once, in init), the sequence number's 12 (once per request), the padding's 11.
  local seq_b64 = mode == "e3_txn4" and base64(string.format("%010d.x", seq))
  for i, id in ipairs(ids) do
    if mode == "rk1_txn4" then
      puts[i] = string.format('{"put":{"key":"%s","value":"%05d.%s.%010d.xxxxxxxxxxxx"}}',
        keys[id], id, tag, seq)
    else
      puts[i] = '{"request_put":{"key":"' .. keys_b64[id] .. '","value":"' .. heads[id] ..
        seq_b64 .. tail .. '"}}'
    end
  end
  local body = '{"success":[' .. table.concat(puts, ",") .. ']}'
  return wrk.format("POST", mode == "rk1_txn4" and "/v1/txn" or "/v3/kv/txn", json_headers, body)
end

local modes = { health = true, version = true, rk_read = true, rk_stale = true, e3_range = true,
                e3_range_ser = true, e2_get = true, rk_write = true, e2_put = true, e3_put = true,
                rk1_put = true, rk1_get = true, rk1_txn4 = true, e3_txn4 = true, rk1_range = true,
                e3_range100 = true }

function init(args)
  mode = args[1] or mode
  if not modes[mode] then error("unknown mode " .. mode) end
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
    elseif mode == "rk1_get" then
      reqs[id] = wrk.format("GET", "/v1/kv/" .. k)
    elseif mode == "rk1_range" or mode == "e3_range100" then
      -- 100 prefixes of 100 keys each, spread over the ids: prefix of id XY*100.
      local p = string.format("key-00000000%02d", id % 100)
      if mode == "rk1_range" then
        reqs[id] = wrk.format("GET", "/v1/kv/" .. p .. "?prefix&limit=100")
      else
        local e = string.format("key-00000000%02d", id % 100 + 1)
        if id % 100 == 99 then e = "key-00000001" end
        reqs[id] = wrk.format("POST", "/v3/kv/range", json_headers,
          '{"key":"' .. base64(p) .. '","range_end":"' .. base64(e) .. '","limit":100}')
      end
    end
  end
  if mode == "rk_write" or mode == "e2_put" or mode == "e3_put" or mode == "rk1_put" then
    build_put_requests()
  elseif mode == "e3_txn4" then
    tail = base64(string.rep("x", 11))
    for id = 0, nkeys - 1 do heads[id] = base64(string.format("%05d.%s.", id, tag)) end
  end
end

-- Counts a request; the thread stops itself past `max` (cas.lua uses it too).
function count_request(max)
  if seq >= max then
    wrk.thread:stop()
  end
  seq = seq + 1
end

function request()
  count_request(max_requests)
  if mode == "rk1_txn4" or mode == "e3_txn4" then return txn4_request() end
  local id = math.random(0, nkeys - 1)
  return reqs[id] or put_request(id)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local max_seq, ok, conflicts = 0, 0, 0
  for _, t in ipairs(threads) do
    local s = t:get("seq") or 0
    if s > max_seq then max_seq = s end
    ok = ok + (t:get("cas_ok") or 0) -- cas.lua's counters
    conflicts = conflicts + (t:get("cas_conflicts") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"max_seq":%d,' ..
    '"cas_ok":%d,"cas_conflicts":%d}\n',
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout, max_seq, ok, conflicts))
end
