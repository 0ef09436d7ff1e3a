-- wrk script: unchanged signed device reports, pre-signed by examples/bench_fleet.rs (setup).
--
-- Usage: wrk -t THREADS -c CONNECTIONS -d DURATION --latency -s scripts/bench/reports.lua \
--            http://127.0.0.1:PORT -- REPORTS_TSV THREADS
--
-- REPORTS_TSV has one line per device: index, report path, device token, director targets
-- version, first counter, then one pre-signed body per counter (tab-separated; '#' lines are
-- comments). wrk thread t (numbered in setup) owns the devices whose index is t modulo THREADS
-- and walks them round-robin; each request takes the device's next pre-signed body, so its
-- counters strictly increase and two requests for one device are (devices / THREADS) requests
-- apart. When a thread has used every body it stops (wrk then reports fewer requests over the
-- same duration) and done() prints "bench: EXHAUSTED": the figure is then invalid, raise ROUNDS.
--
-- done() prints machine-readable lines: "bench: status <code> <count>", "bench: unexpected <n>"
-- (responses other than 200) and "bench: exhausted <threads that ran out>".

local threads = {}
local next_index = 0

function setup(thread)
   thread:set("thread_index", next_index)
   next_index = next_index + 1
   table.insert(threads, thread)
end

-- Per thread state (each wrk thread has its own Lua state).
local devices = {}   -- { path, headers, line, pos }
local cursor = 1
statuses = {}
unexpected = 0
exhausted = 0

function init(args)
   local file, total = args[1], tonumber(args[2])
   if not file or not total or total < 1 then
      error("usage: wrk ... -s reports.lua URL -- REPORTS_TSV THREADS")
   end
   local mine = thread_index % total
   for line in io.lines(file) do
      if line:sub(1, 1) ~= "#" and line ~= "" then
         local i, path, token, _, _, rest = line:match("^(%d+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t()")
         if not i then error("reports.lua: malformed line in " .. file) end
         if tonumber(i) % total == mine then
            devices[#devices + 1] = {
               path = path,
               headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
               line = line,
               pos = rest,
            }
         end
      end
   end
   if #devices == 0 then error("reports.lua: thread " .. thread_index .. " owns no device") end
end

function request()
   local d = devices[cursor]
   cursor = cursor % #devices + 1
   local line, pos = d.line, d.pos
   if pos > #line then
      -- Out of pre-signed bodies: re-sending one would be a stale counter (409).
      if exhausted == 0 then
         exhausted = 1
         wrk.thread:stop()
      end
      return wrk.format("GET", "/healthz")
   end
   local tab = line:find("\t", pos, true)
   local body
   if tab then
      body = line:sub(pos, tab - 1)
      d.pos = tab + 1
   else
      body = line:sub(pos)
      d.pos = #line + 1
   end
   return wrk.format("POST", d.path, d.headers, body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status ~= 200 then unexpected = unexpected + 1 end
end

function done(summary, latency, requests)
   local totals, bad, out = {}, 0, 0
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses") or {}) do
         totals[code] = (totals[code] or 0) + n
      end
      bad = bad + (thread:get("unexpected") or 0)
      out = out + (thread:get("exhausted") or 0)
   end
   for code, n in pairs(totals) do
      io.write(string.format("bench: status %d %d\n", code, n))
   end
   io.write(string.format("bench: unexpected %d\n", bad))
   io.write(string.format("bench: exhausted %d\n", out))
   if out > 0 then
      io.write("bench: EXHAUSTED: " .. out .. " thread(s) ran out of pre-signed reports; the rate is invalid, raise ROUNDS\n")
   end
end
