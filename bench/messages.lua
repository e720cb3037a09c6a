-- wrk script: POST a small non-streaming Messages body; print a JSON summary line at the end.
-- Key comes from the environment (BENCH_KEY); empty for the direct and bare-proxy rows.
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Say hello."}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
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
