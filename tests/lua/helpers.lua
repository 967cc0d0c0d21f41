-- helpers.lua: the fixture the Lua specs share, as tests/c/kh_test.h is for the C tests: a
-- manager whose every event is recorded, and waits on events (never on time).
local kernelhost = require("kernelhost")

local H = {}

-- KH_TEST_MODE ("main_thread" by default, or "worker"): the mode every spec uses.
function H.mode()
  local m = os.getenv("KH_TEST_MODE")
  return (m and m ~= "") and m or "main_thread"
end

-- Kernel options for H.mode() plus `extra`.
function H.opts(extra)
  local o = { mode = H.mode() }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- An integer, as far as the running Lua can tell: math.type() on 5.3 and later; Lua 5.1
-- (LuaJIT) has only doubles, where an integer the binding handed out is an integral number
-- (beyond 2^53 it is handed out as a string of its digits: lkh-compat.h).
function H.is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v) and math.abs(v) <= 2 ^ 53
end

-- A manager that records every event it sees, in order.
function H.fixture(manager_opts)
  local f = { events = {} }
  f.m = assert(kernelhost.KernelManager.new(manager_opts))
  f.sub = f.m:on_kernel_event(nil, kernelhost.KernelEvents.ALL, function(e)
    f.events[#f.events + 1] = e
  end)
  return f
end

function H.close(f)
  if f and f.m then assert(f.m:close()) end
end

-- Events of `type` ("*" for any) belonging to exec_id (nil for any), in order.
function H.events(f, type, exec_id)
  local out = {}
  for _, e in ipairs(f.events) do
    if (type == "*" or e.type == type) and (exec_id == nil or e.execution_id == exec_id) then
      out[#out + 1] = e
    end
  end
  return out
end

function H.count(f, type, exec_id) return #H.events(f, type, exec_id) end

-- Status events with this execution_state, of exec_id (nil: any; "": the kernel's own).
function H.statuses(f, state, exec_id)
  local out = {}
  for _, e in ipairs(H.events(f, "status", exec_id)) do
    if e.data.execution_state == state then out[#out + 1] = e end
  end
  return out
end

-- Runs the manager's loop until cond() holds. The watchdog fails the spec after a minute
-- without a single event, like the C harness; it is a guard, not a wait.
function H.wait(f, cond, what)
  local quiet = 0
  while not cond() do
    local n = assert(f.m:poll(1000))
    if n == 0 then
      quiet = quiet + 1
      if quiet >= 60 then error("watchdog: never happened: " .. (what or "?"), 2) end
    else
      quiet = 0
    end
  end
end

-- Creates a kernel in H.mode(); fails the spec on error.
function H.create(f, extra)
  local id, msg, code = f.m:create_kernel(H.opts(extra))
  assert(id, ("create_kernel: %s: %s"):format(tostring(code), tostring(msg)))
  return id, f.m:get_kernel(id)
end

-- Worker kernel options plus `extra`, whatever KH_TEST_MODE says (worker and sandbox specs).
function H.worker_opts(extra)
  local o = { mode = "worker" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Creates a worker kernel; fails the spec on error.
function H.create_worker(f, extra) return H.create(f, H.worker_opts(extra)) end

-- Executes and returns the result; fails the spec unless the call succeeds.
function H.exec(kernel, code, opts)
  local r, msg, err = kernel:execute(code, opts)
  assert(r, ("execute(%s): %s: %s"):format(code, tostring(err), tostring(msg)))
  return r
end

-- Submits; returns the execution id and a state table that fills in when the callback runs.
function H.submit(kernel, code, opts)
  local st = { done = false, calls = 0 }
  local eid, msg, err = kernel:submit(code, opts, function(r, m, c)
    st.calls = st.calls + 1
    st.done, st.result, st.msg, st.code = true, r, m, c
  end)
  assert(eid, ("submit(%s): %s: %s"):format(code, tostring(err), tostring(msg)))
  st.id = eid
  return eid, st
end

-- Submits code and waits until it is running: its first statement prints a marker, so the
-- cell is inside its own code, not merely started. (An interrupt that arrives between busy and
-- the cell's first statement is held by the runtime until the cell begins: tests/cases
-- interrupt on busy.)
function H.start(f, kernel, code)
  local eid, st = H.submit(kernel, "print('<started>', flush=True)\n" .. code)
  H.wait(f, function()
    return H.stream_text(f, eid, "stdout"):find("<started>", 1, true) ~= nil
  end, "the cell to start")
  return eid, st
end

-- The text of every stream event of exec_id (and `name` when given), concatenated.
function H.stream_text(f, exec_id, name)
  local parts = {}
  for _, e in ipairs(H.events(f, "stream", exec_id)) do
    if name == nil or e.data.name == name then parts[#parts + 1] = e.data.text end
  end
  return table.concat(parts)
end

return H
