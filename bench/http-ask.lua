-- wrk script for bench/http-ask.sh: POST /v1/ask (JSON, not streamed) cycling through a few questions about the
-- demo corpus (/usr/share/common-licenses).
local questions = {
  "What does the Apache License say about patent grants?",
  "Can I distribute modified versions under the GPL?",
  "What is the warranty disclaimer of the MIT license?",
  "What does the Mozilla Public License require for source code?",
  "Does the Artistic License allow commercial distribution?",
}
local i = 0
request = function()
  i = i % #questions + 1
  local body = '{"question": "' .. questions[i] .. '"' .. (os.getenv("EV_STREAM") == "1" and ', "stream": true' or '') .. '}'
  return wrk.format("POST", "/v1/ask", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("requests %d, errors: connect %d read %d write %d status %d timeout %d\n", summary.requests,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
  io.write(string.format("rps %.1f p50_ms %.2f p90_ms %.2f p99_ms %.2f max_ms %.2f\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
