-- GET /api/user/me/ with a Bearer access token (TOKEN env var).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
