-- POST /api/token/introspect/ as an introspection client (INTROSPECT_BASIC:
-- the base64 of "id:secret") about a valid user access token (TOKEN).
-- Introspection answers 200 for dead tokens too ({"active":false}): every
-- answer without "active":true is counted in non2xx, like a refusal.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("INTROSPECT_BASIC")
wrk.body = "token=" .. os.getenv("TOKEN")
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end
inactive = 0
function response(status, headers, body)
  if status == 200 and not body:find('"active":true', 1, true) then
    inactive = inactive + 1
  end
end
-- wrk counts only status >= 400 in errors.status: add the inactive ones.
local report = done
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    summary.errors.status = summary.errors.status + t:get("inactive")
  end
  report(summary, latency, requests)
end
