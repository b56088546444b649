-- POST /api/token/verify/ with a valid access token (TOKEN env var).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"token":"' .. os.getenv("TOKEN") .. '"}'
