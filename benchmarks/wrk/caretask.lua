-- Requests for `python -m benchmarks.http`, one scenario per wrk run.
-- The driver writes the data file (token, ids, query values, bodies) and sets:
--   CARETASK_WRK_DATA      path of that Lua file
--   CARETASK_WRK_SCENARIO  read | create | update | by-patient | owner-status | mix
--                          | patch | conditional-create | transaction | claim-next
--                          | create-subscribed | ceiling-get | ceiling-post
--   CARETASK_WRK_THREADS   wrk's -t, to share the update ids between threads
--   CARETASK_WRK_RATE      optional: requests per second in all (benchmarks.soak); wrk
--                          itself has no rate option, so delay() paces the requests
-- done() prints one line, CARETASK_RESULT {json}, that the driver parses.

local data = dofile(os.getenv("CARETASK_WRK_DATA"))
local scenario = os.getenv("CARETASK_WRK_SCENARIO")
local nthreads = tonumber(os.getenv("CARETASK_WRK_THREADS") or "1")
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local get_headers, post_headers, versions, mine, counter

function init(args)
  math.randomseed(1000 + (tid or 0))
  local auth = "Bearer " .. data.token
  get_headers = { ["Authorization"] = auth, ["Accept"] = "application/fhir+json" }
  post_headers = {
    ["Authorization"] = auth,
    ["Accept"] = "application/fhir+json",
    ["Content-Type"] = "application/fhir+json",
  }
  -- each thread updates its own ids, in turn, so no two requests race for one task
  versions, mine, counter = {}, {}, 0
  for i = (tid or 0) + 1, #data.update_ids, nthreads do
    local id = data.update_ids[i]
    mine[#mine + 1] = id
    versions[id] = 1
  end
  non2xx = 0
end

-- Pacing: every request takes the next slot of one schedule per thread, 1/rate apart, and
-- waits for it, so the rate holds whatever the latency (a fixed per-connection delay would
-- add the latency to each cycle). A thread more than a second behind starts afresh rather
-- than firing the backlog at once.
local rate = tonumber(os.getenv("CARETASK_WRK_RATE") or "")
if rate then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } caretask_timespec;
    int clock_gettime(int clock, caretask_timespec *now);
  ]])
  local now = ffi.new("caretask_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
    return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  end
  local interval_ms = 1000 * nthreads / rate
  local slot
  function delay()
    local t = now_ms()
    if slot == nil or slot < t - 1000 then slot = t end
    local wait = slot - t
    slot = slot + interval_ms
    return wait > 0 and wait or 0
  end
end

local function pick(list)
  return list[math.random(#list)]
end

local function read()
  return wrk.format("GET", "/Task/" .. pick(data.read_ids), get_headers)
end

local function by_patient()
  return wrk.format("GET", "/Task?patient=" .. pick(data.patients), get_headers)
end

local function owner_status()
  return wrk.format("GET", "/Task?" .. pick(data.owner_status), get_headers)
end

local function create()
  return wrk.format("POST", "/Task", post_headers, string.format(data.create_body, pick(data.patients)))
end

local function update()
  counter = counter + 1
  local id = mine[(counter % #mine) + 1]
  local headers = {}
  for k, v in pairs(post_headers) do headers[k] = v end
  headers["If-Match"] = 'W/"' .. versions[id] .. '"'
  return wrk.format("PUT", "/Task/" .. id, headers, string.format(data.update_body, id))
end

local function patch()
  counter = counter + 1
  local id = mine[(counter % #mine) + 1]
  local headers = {}
  for k, v in pairs(post_headers) do headers[k] = v end
  headers["Content-Type"] = "application/json-patch+json"
  headers["If-Match"] = 'W/"' .. versions[id] .. '"'
  return wrk.format("PATCH", "/Task/" .. id, headers, string.format(data.patch_body, counter))
end

-- each request a new identifier: the condition's search runs and finds nothing, so every
-- request creates (what a retrying client's first attempt costs)
local function conditional_create()
  counter = counter + 1
  local value = string.format("%d-%d", tid or 0, counter)
  local headers = {}
  for k, v in pairs(post_headers) do headers[k] = v end
  headers["If-None-Exist"] = "identifier=" .. data.identifier_system .. "|" .. value
  return wrk.format("POST", "/Task", headers, string.format(data.conditional_body, value))
end

local function transaction()
  return wrk.format("POST", "/", post_headers, data.transaction_body)
end

local function claim_next()
  return wrk.format("POST", "/Task/$claim-next", post_headers, data.claim_next_body)
end

local function mix()
  local r = math.random(100)
  if r <= 40 then return read() end
  if r <= 55 then return by_patient() end
  if r <= 70 then return owner_status() end
  if r <= 90 then return update() end
  return create()
end

local scenarios = {
  ["read"] = read,
  ["create"] = create,
  ["update"] = update,
  ["by-patient"] = by_patient,
  ["owner-status"] = owner_status,
  ["mix"] = mix,
  ["patch"] = patch,
  ["conditional-create"] = conditional_create,
  ["transaction"] = transaction,
  ["claim-next"] = claim_next,
  ["create-subscribed"] = create,
  ["ceiling-get"] = function() return wrk.format("GET", "/Task/x", get_headers) end,
  ["ceiling-post"] = function() return wrk.format("POST", "/Task", post_headers, data.ceiling_body) end,
}
request = scenarios[scenario]

if not string.find(scenario, "^ceiling") then
  -- counts every non-2xx (wrk itself counts only >= 400) and follows versions: an
  -- update's Location ends in /_history/<version>
  response = function(status, headers, body)
    if status < 200 or status > 299 or (scenario == "conditional-create" and status ~= 201) then
      non2xx = non2xx + 1  -- a conditional create that found a match did not create
      return
    end
    local location = headers["location"] or headers["Location"]
    if location then
      local id, v = string.match(location, "/Task/([^/]+)/_history/(%d+)$")
      if id and versions[id] then versions[id] = tonumber(v) end
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + (thread:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    'CARETASK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"socket_errors": %d, "status_errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, bad
  ))
end
