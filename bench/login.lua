-- POST /api/token/ with the benchmark user's credentials (bcrypt-bound).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username":"' .. os.getenv("BENCH_USER") .. '","password":"' .. os.getenv("BENCH_PASSWORD") .. '"}'
