-- wrk script: POST one Claude Code-shaped body (bench/bodies.py) with Claude Code's headers; print a
-- JSON summary line at the end. BENCH_BODY_FILE: the body; BENCH_HEADERS_FILE: "name: value" lines;
-- BENCH_KEY: x-api-key (empty for the direct and bare-proxy rows).
wrk.method = "POST"
wrk.path = "/v1/messages?beta=true"
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["content-type"] = "application/json"
local h = io.open(os.getenv("BENCH_HEADERS_FILE") or "", "r")
if h then
  for line in h:lines() do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
  h:close()
end
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["x-api-key"] = key end

local non2xx = 0
function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
               + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"mean_ms":%.3f,"errors":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.mean / 1000, errors))
end
