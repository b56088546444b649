-- POST /api/token/refresh/, every request a real rotation: a pool of fresh
-- refresh tokens (one per line in REFRESH_FILE, one session each) is
-- consumed, and every answer puts its new refresh token back. A token is
-- never presented twice, so no request is a replay or a reuse.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
local pool = {}
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  local f = assert(io.open(os.getenv("REFRESH_FILE")))
  local all = {}
  for line in f:lines() do if #line > 0 then all[#all + 1] = line end end
  f:close()
  -- Each wrk thread takes its own slice, so threads never share a token.
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  for i = 1, #all do
    if (i - 1) % n == id then pool[#pool + 1] = all[i] end
  end
end
function request()
  local token = table.remove(pool)
  if token == nil then
    -- Pool exhausted (more connections in flight than tokens): an invalid
    -- token shows up as an error in the summary, never a silent replay.
    token = "exhausted"
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    '{"refresh":"' .. token .. '"}')
end
function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh":"([^"]+)"')
    if token then pool[#pool + 1] = token end
  end
end
