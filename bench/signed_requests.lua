-- wrk script: POST /webhook with pre-signed, unique messages read from a file.
-- Each wrk thread takes its own slice of the file, so no message is sent twice.
-- The file has two lines per message: the X-Signature, then the JSON body. An optional third
-- argument paces each connection: milliseconds to wait before each request.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, thread_count = args[1], tonumber(args[2])
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  local total = #lines / 2
  local per_thread = math.floor(total / thread_count)
  local first = id * per_thread
  requests_list = {}
  for i = first, first + per_thread - 1 do
    requests_list[#requests_list + 1] = wrk.format("POST", "/webhook", {
      ["Content-Type"] = "application/json",
      ["X-Signature"] = lines[2 * i + 1],
    }, lines[2 * i + 2])
  end
  position = 0
  local pause = tonumber(args[3] or "0")
  if pause > 0 then
    function delay() return pause end
  end
end

function request()
  position = position + 1
  if position > #requests_list then
    error("ran out of unique messages; generate more")
  end
  return requests_list[position]
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\"requests\": %d, \"seconds\": %.3f, \"errors\": %d, \"non2xx\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f}\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
