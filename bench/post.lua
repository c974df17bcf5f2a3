-- wrk script of `make bench`: POST one log-channel notification per request with the API key
-- from PULSE_BENCH_KEY; at the end, one JSON line with the figures bench/accept.py reads.
wrk.method = "POST"
wrk.body = '{"recipient": "bench", "channel": "log", "payload": {"message": "benchmark"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("PULSE_BENCH_KEY") or "none")

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "socket_errors": %d, "non_2xx": %d,'
      .. ' "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
