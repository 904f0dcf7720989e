-- The compare-and-swap cells of `make bench` (bench/raftkv_vs_etcd.py runs it with -t1):
--
--   wrk -t1 -cC -dDs --latency -s bench/wrk/cas.lua http://HOST:PORT -- MODE TAG KEYS MAX SEED
--
-- MODE:
--   rk1_cas   PUT  /v1/kv/hot-N?if_mod_revision=R {"value":"<v+1>"}      raftkv
--   e3_cas    POST /v3/kv/txn  compare MOD = R, put v+1 and range the key  etcd
-- Both increment 16 counters, hot-000000000000 .. hot-000000000015 (16 bytes): a request
-- takes the key's value v and mod_revision R from the last answer that showed them (from any
-- connection; a first try with R = 0 fails and shows them) and asks to write v + 1 if the
-- key's mod_revision is still R. A raftkv 412 or an etcd succeeded:false is a lost race, not
-- an error. done() (load.lua's) also reports "cas_ok" and "cas_conflicts"; the driver checks
-- that the counters grew by exactly cas_ok. This script reads every answer, which costs wrk
-- time, so it is apart from load.lua; it borrows load.lua's setup(), done(), count_request() and base64.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "load.lua")

local mode, max_requests = "rk1_cas", 1000000
local base64 = base64_global
local json_headers = { ["Content-Type"] = "application/json" }
local hot, hot_b64, known_value, known_rev, hot_index = {}, {}, {}, {}, {}
cas_ok, cas_conflicts = 0, 0 -- globals: done() reads them

local b64val = {}
for i = 1, 64 do b64val[b64chars_global:sub(i, i)] = i - 1 end

local function unbase64(s)
  local val = b64val
  local out, bits, n = {}, 0, 0
  for c in s:gmatch("[^=]") do
    bits = (bits % 65536) * 64 + val[c]
    n = n + 6
    if n >= 8 then
      n = n - 8
      out[#out + 1] = string.char(math.floor(bits / 2 ^ n) % 256)
    end
  end
  return table.concat(out)
end

function init(args)
  mode = args[1] or mode
  if mode ~= "rk1_cas" and mode ~= "e3_cas" then error("unknown mode " .. mode) end
  max_requests = tonumber(args[4] or max_requests)
  math.randomseed(tonumber(args[5] or 1))
  for h = 0, 15 do
    hot[h] = string.format("hot-%012d", h)
    hot_b64[h] = base64(hot[h])
    hot_index[mode == "rk1_cas" and hot[h] or hot_b64[h]] = h
  end
end

function request()
  count_request(max_requests)
  local h = math.random(0, 15)
  local v, rev = known_value[h] or 0, known_rev[h] or 0
  if mode == "rk1_cas" then
    return wrk.format("PUT", "/v1/kv/" .. hot[h] .. "?if_mod_revision=" .. rev, json_headers,
      '{"value":"' .. (v + 1) .. '"}')
  end
  -- etcd: the success branch reads the key back, so that the answer names it (raftkv's
  -- answer to a PUT carries the key already); a small extra op for etcd.
  local range = '{"request_range":{"key":"' .. hot_b64[h] .. '"}}'
  return wrk.format("POST", "/v3/kv/txn", json_headers,
    '{"compare":[{"key":"' .. hot_b64[h] .. '","target":"MOD","mod_revision":"' .. rev ..
    '"}],"success":[{"request_put":{"key":"' .. hot_b64[h] .. '","value":"' ..
    base64(tostring(v + 1)) .. '"}},' .. range .. '],"failure":[' .. range .. ']}')
end

function response(status, headers, body)
  if mode == "rk1_cas" then
    if status == 200 then
      cas_ok = cas_ok + 1
    elseif status == 412 then
      cas_conflicts = cas_conflicts + 1
    end
    local k, v, rev = (body or ""):match('"key":"(hot%-%d+)","value":"(%d+)".-"mod_revision":(%d+)')
    if k then
      local h = hot_index[k]
      known_value[h], known_rev[h] = tonumber(v), tonumber(rev)
    end
    return
  end
  if status ~= 200 or not body then return end
  if body:find('"succeeded":true', 1, true) then
    cas_ok = cas_ok + 1
  else
    cas_conflicts = cas_conflicts + 1
  end
  local k, rev, v = body:match('"kvs":%[{"key":"([^"]+)".-"mod_revision":"(%d+)".-"value":"([^"]*)"')
  if k and hot_index[k] then
    local h = hot_index[k]
    known_value[h], known_rev[h] = tonumber(unbase64(v)), tonumber(rev)
  end
end
