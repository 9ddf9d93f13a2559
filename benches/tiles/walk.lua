-- wrk script: walk tiles in z order, the way a viewer scrolls z.
-- PREFIX (path before the slice number), SUFFIX (after it), Z (slices).
-- Use one wrk thread (-t1): the counter is shared by all its connections.
local prefix = os.getenv("PREFIX")
local suffix = os.getenv("SUFFIX") or ""
local Z = tonumber(os.getenv("Z"))
local z = 0
local bad = 0

request = function()
  local path = prefix .. (z % Z) .. suffix
  z = z + 1
  return wrk.format("GET", path)
end

response = function(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    if bad <= 3 then print("status " .. status .. ": " .. body) end
  end
end

done = function(summary, latency, requests)
  io.write(string.format("FRAMES %d FPS %.1f P50_MS %.2f P99_MS %.2f ERRORS %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
