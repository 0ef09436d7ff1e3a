-- wrk script: conditional GETs of per-device director metadata that has not changed (304).
--
-- Usage: wrk -t THREADS -c CONNECTIONS -d DURATION --latency -s scripts/bench/director304.lua \
--            http://127.0.0.1:PORT -- DIRECTOR_TSV THREADS [EXPECTED_STATUS]
--
-- DIRECTOR_TSV (written by examples/bench_fleet.rs setup) has one line per device: index, path
-- (/director/{id}/metadata/timestamp.json), device token, ETag (tab-separated; '#' lines are
-- comments). Each request is a GET of the next device's path, round-robin, with
-- "Authorization: Bearer <token>" and "If-None-Match: <ETag>". wrk thread t (numbered in setup)
-- owns the devices whose index is t modulo THREADS. EXPECTED_STATUS defaults to 304.
-- scripts/bench.sh also points this script at nginx (one file, its own ETag) as the anchor, so
-- both sides pay the same per-request cost in wrk.
--
-- done() prints machine-readable lines: "bench: status <code> <count>" and
-- "bench: unexpected <responses other than EXPECTED_STATUS>".

local threads = {}
local next_index = 0

function setup(thread)
   thread:set("thread_index", next_index)
   next_index = next_index + 1
   table.insert(threads, thread)
end

-- Per thread state (each wrk thread has its own Lua state).
local requests = {}
local cursor = 1
local expected = 304
statuses = {}
unexpected = 0

function init(args)
   local file, total = args[1], tonumber(args[2])
   if not file or not total or total < 1 then
      error("usage: wrk ... -s director304.lua URL -- DIRECTOR_TSV THREADS [EXPECTED_STATUS]")
   end
   expected = tonumber(args[3] or "304")
   local mine = thread_index % total
   for line in io.lines(file) do
      if line:sub(1, 1) ~= "#" and line ~= "" then
         local i, path, token, etag = line:match("^(%d+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
         if not i then error("director304.lua: malformed line in " .. file) end
         if tonumber(i) % total == mine then
            -- Formatted once: the request for a device never changes.
            requests[#requests + 1] = wrk.format("GET", path, {
               ["Authorization"] = "Bearer " .. token,
               ["If-None-Match"] = etag,
            })
         end
      end
   end
   if #requests == 0 then error("director304.lua: thread " .. thread_index .. " owns no device") end
end

function request()
   local r = requests[cursor]
   cursor = cursor % #requests + 1
   return r
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status ~= expected then unexpected = unexpected + 1 end
end

function done(summary, latency, requests)
   local totals, bad = {}, 0
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses") or {}) do
         totals[code] = (totals[code] or 0) + n
      end
      bad = bad + (thread:get("unexpected") or 0)
   end
   for code, n in pairs(totals) do
      io.write(string.format("bench: status %d %d\n", code, n))
   end
   io.write(string.format("bench: unexpected %d\n", bad))
end
