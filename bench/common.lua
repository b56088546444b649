-- Shared by every workload: a machine-readable summary at the end.
-- Each workload script sets wrk.method/body/headers or request/response.
function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    "WRK requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, errors, e.status,
    latency:percentile(50), latency:percentile(99)))
end
