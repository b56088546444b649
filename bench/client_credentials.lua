-- POST /api/oauth/token/: the client credentials grant, client_secret_basic
-- (CLIENT_BASIC: the base64 of "id:secret", form-encoded as RFC 6749 §2.3.1
-- asks). Any answer but 200 counts in non2xx.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("CLIENT_BASIC")
wrk.body = "grant_type=client_credentials"
