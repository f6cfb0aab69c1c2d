-- wrk script for `make bench`: POST one fixed JSON body over and over, count answers by status,
-- and stop sending once the measured window is over.
--
--   wrk ... -s collect.lua http://127.0.0.1:PORT/collect -- BODY_FILE WINDOW_SECONDS ["Header: value"] [RATE]
--
-- Why the window: when wrk's -d runs out it drops the requests still in flight, so the server may
-- have kept events whose 2xx wrk never read, and "acked == stored" could never be exact. Here every
-- connection sends only until WINDOW_SECONDS have passed (delay() then parks it for a day); wrk's
-- -d is set a little longer so the last answers arrive before wrk stops. done() prints one line,
-- "BENCH_RESULT {json}", which bench.py parses.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])

local CLOCK_MONOTONIC = 1
local PARKED_MS = 24 * 3600 * 1000
local timespec = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- Main (setup/done) state: the thread objects, to aggregate their counters at the end.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Thread state: the counters done() reads with thread:get().
sent = 0       -- requests started inside the window
received = 0   -- answers of any status
ok = 0         -- 2xx answers: the acknowledged requests
statuses = {}  -- non-2xx answers by status (string keys: they travel through thread:get)

function init(args)
  -- init() runs before wrk builds its (static) request, so the body set here is the one sent.
  -- args[0] is the URL; what follows "--" on wrk's command line starts at args[1].
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  window = assert(tonumber(args[2]), "WINDOW_SECONDS missing")
  -- An optional "Name: value" header (a front door's credentials, e.g. Segment's Basic write key).
  local name, value = string.match(args[3] or "", "^([^:]+):%s*(.+)$")
  if name then
    wrk.headers[name] = value
  end
  -- An optional pace, requests/s for this thread (BENCH_RATE / threads; 0: as fast as answers come back): each
  -- request takes the next free slot of the thread's schedule, so the offered rate holds while the server keeps up.
  spacing = (tonumber(args[4] or "0") or 0) > 0 and 1 / tonumber(args[4]) or 0
  next_slot = now()
  deadline = now() + window
end

-- wrk calls delay() before every request of a connection (the first one too): it is where a request
-- is counted as sent, and where connections stop once the window is over.
function delay()
  local t = now()
  if t >= deadline then
    return PARKED_MS
  end
  sent = sent + 1
  if spacing == 0 then
    return 0
  end
  local slot = math.max(next_slot, t)
  next_slot = slot + spacing
  return math.floor((slot - t) * 1000)
end

function response(status, headers, body)
  received = received + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = { sent = 0, received = 0, ok = 0 }
  local by_status = {}
  local window_s = 0
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      total[name] = total[name] + thread:get(name)
    end
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
    window_s = thread:get("window")
  end

  local status_parts = {}
  for status, count in pairs(by_status) do
    table.insert(status_parts, string.format('"%s":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"window_s":%.3f,"sent":%d,"received":%d,"ok":%d,"non2xx":{%s},' ..
    '"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f,"wrk_requests":%d,"wrk_duration_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}}\n',
    window_s, total.sent, total.received, total.ok, table.concat(status_parts, ","),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout, e.status))
end
