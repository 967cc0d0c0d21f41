-- jupyter_spec.lua: manager:serve_jupyter() in a live Lua host: a real jupyter_client
-- (tests/jupyter/attach_client.py, a child process) attaches to a kernel this host serves while
-- the host drives manager:poll() in its own loop, and the server's life as a Lua host sees it.
-- The same names as tests/c/test_jupyter_attach.c and tests/node/jupyter.test.js.
local kernelhost = require("kernelhost")
local json = require("dkjson") -- a dependency of busted itself
local H = require("helpers")
local P = require("proc")

local PYTHON = "/usr/bin/python3" -- Debian's, where jupyter_client is
local CLIENT = "../jupyter/attach_client.py" -- the specs run in tests/lua

local function gone(path) return io.open(path, "r") == nil end

-- Starts attach_client.py on the connection file in the background; returns a handle whose
-- done() says whether it exited and result() gives its summary.
local function attach(file, flag)
  local dir = P.mkdtemp("kh-lua-attach-")
  local out, status = dir .. "/out.json", dir .. "/status"
  -- The status file appears whole (mv) once the client exited: what the host's loop looks for.
  os.execute(("(%s %s %s %s > %s; echo $? > %s.tmp && mv %s.tmp %s) &"):format(PYTHON,
    P.quote(CLIENT), P.quote(file), flag or "", P.quote(out), P.quote(status), P.quote(status),
    P.quote(status)))
  local c = {}
  function c.done() return P.read_file(status) ~= nil end
  function c.result()
    local code = tonumber(P.read_file(status))
    local text = P.read_file(out) or ""
    P.rmtree(dir)
    assert.are.equal(0, code, "attach_client.py: " .. text)
    local summary = json.decode(text)
    assert.is_table(summary, text)
    assert.are.equal(0, #summary.failures, text)
    return summary
  end
  return c
end

-- The host's own loop: poll() turns until the client exited, counting its turns. Bounded as
-- the other waits are (the 50 ms only caps each turn; the wait is on the loop).
local function host_loop(f, client, on_turn)
  for _ = 1, 2400 do
    if client.done() then return end
    assert(f.m:poll(50))
    on_turn()
  end
  error("watchdog: the wire client never finished")
end

local function temp_file(name)
  local dir = P.mkdtemp("kh-lua-jupyter-")
  return dir .. "/" .. name, dir
end

local function mode_of(path) return P.sh("stat -c %a " .. P.quote(path)):gsub("%s+$", "") end

describe("jupyter", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("jupyter_attach_live_host", function()
    local id, k = H.create(f)
    local file, dir = temp_file("connection.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    local stopped = 0
    server:on("stopped", function() stopped = stopped + 1 end)
    assert.are.equal(id, server.kernel_id)
    assert.are.equal(file, server:connection_file())
    local info = server:info()
    assert.are.equal(file, info.connection_file)
    assert.are.same(json.decode(P.read_file(file)), info.connection)
    assert.are.equal("127.0.0.1", info.connection.ip)
    assert.are.equal("tcp", info.connection.transport)
    assert.are.equal("hmac-sha256", info.connection.signature_scheme)
    assert.is_true(#info.connection.key >= 32)
    assert.is_true(info.connection.shell_port > 0)
    assert.is_false(info.stopping)

    -- The host sees the wire's cells among its own events of the kernel.
    local turns, marker_turns, marker_exec = 0, -1, nil
    f.m:on_kernel_event(id, "stream", function(d)
      if marker_exec == nil and d.text:find("wire-marker 42", 1, true) then
        marker_turns, marker_exec = turns, d.execution_id
      end
    end)
    local client = attach(file)
    host_loop(f, client, function() turns = turns + 1 end)
    local summary = client.result()
    assert.are.equal("ok", summary.execute.status)
    assert.are.equal("wire-marker 42\n", summary.execute.stdout)
    assert.are.equal("KeyboardInterrupt", summary.interrupt.ename)
    assert.are.equal("ok", summary.complete.status)

    assert.is_not_nil(marker_exec)
    assert.is_true(marker_turns > 0)
    assert.is_true(turns > marker_turns)
    local errs = H.events(f, "execute_error")
    assert.are.equal("KeyboardInterrupt", errs[1].data.ename)
    assert.are_not.equal(marker_exec, errs[1].execution_id)
    info = server:info()
    assert.is_true(info.messages > 0)
    assert.are.equal(0, info.dropped)
    assert.are.equal(0, stopped)

    -- Stopping: "stopped" once, the file gone, the kernel running on with the wire's namespace.
    assert.is_true(server:stop())
    assert.are.equal(1, stopped)
    assert.is_true(gone(file))
    assert.is_true(server:info().stopping)
    assert.are.equal("43", H.exec(k, "wire_value + 1").result.data["text/plain"])
    P.rmtree(dir)
  end)

  it("jupyter_attach_shutdown", function()
    local id, k = H.create(f)
    local file, dir = temp_file("connection.json")
    local server = assert(f.m:serve_jupyter(id, { connectionFile = file }))
    local notes = {}
    server:on("shutdown", function(d) notes[#notes + 1] = "shutdown restart=" .. tostring(d.restart) end)
    server:on("stopped", function() notes[#notes + 1] = "stopped" end)
    local client = attach(file, "--shutdown")
    host_loop(f, client, function() end)
    assert.are.equal("shutdown_reply", client.result().shutdown.reply)
    H.wait(f, function() return #notes == 2 end, "the server to stop")
    assert.are.same({ "shutdown restart=false", "stopped" }, notes)
    assert.is_true(gone(file))
    assert.is_not_nil(f.m:get_kernel(id))
    assert.are.equal("42", H.exec(k, "6 * 7").result.data["text/plain"])
    P.rmtree(dir)
  end)

  it("jupyter_serve_bad_options", function()
    local id = H.create(f)
    -- What the core refuses: nil, msg, "KH_EOPTION" naming the option.
    for _, case in ipairs({
      { { bogus = 1 }, "bogus" },
      { { ip = 5 }, "ip" },
      { { connection_file = true }, "connection_file" },
      { { shutdown = "later" }, "shutdown" },
      { { transport = "udp" }, "transport" },
      { { connection = { shell_port = "x" } }, "shell_port" },
      { { connection = { shell_port = 70000 } }, "shell_port" },
      { { connection = { shell_port = 0 / 0 } }, "shell_port" },
    }) do
      local s, msg, code = f.m:serve_jupyter(id, case[1])
      assert.is_nil(s)
      assert.are.equal("KH_EOPTION", code, msg)
      assert.is_truthy(msg:find(case[2], 1, true), msg)
    end
    -- Misuse raises.
    assert.has_error(function() f.m:serve_jupyter(id, "opts") end)
    assert.has_error(function() f.m:serve_jupyter(nil) end)
    assert.has_error(function() f.m:serve_jupyter(id, { ip = print }) end)
    -- Nothing was left serving: the kernel can be served now.
    local file, dir = temp_file("c.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    assert.is_true(server:stop())
    assert.is_true(gone(file))
    P.rmtree(dir)
  end)

  it("jupyter_serve_twice", function()
    local id = H.create(f)
    local f1, dir = temp_file("one.json")
    local f2 = dir .. "/two.json"
    local s1 = assert(f.m:serve_jupyter(id, { connection_file = f1 }))
    local s, msg, code = f.m:serve_jupyter(id, { connection_file = f2 })
    assert.is_nil(s)
    assert.are.equal("KH_EEXIST", code)
    assert.is_truthy(msg:find(id, 1, true), msg)
    assert.is_true(gone(f2))
    assert.is_false(s1:info().stopping)
    assert.is_true(s1:stop())
    local s2 = assert(f.m:serve_jupyter(id, { connection_file = f2 }))
    assert.is_true(s2:stop())
    assert.is_true(gone(f1) and gone(f2))
    P.rmtree(dir)
  end)

  it("jupyter_stop_twice", function()
    local id = H.create(f)
    local file, dir = temp_file("c.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    local stopped = 0
    server:on("stopped", function() stopped = stopped + 1 end)
    assert.is_true(server:stop())
    assert.are.equal(1, stopped)
    assert.is_true(server:stop()) -- stopped already: no error, no second "stopped"
    assert(f.m:close())
    assert.is_true(server:stop())
    assert.are.equal(1, stopped)
    assert.is_true(gone(file))
    P.rmtree(dir)
  end)

  it("jupyter_serve_unknown_kernel", function()
    local s, msg, code = f.m:serve_jupyter("no-such-kernel")
    assert.is_nil(s)
    assert.are.equal("KH_ENOTFOUND", code, msg)
    local id = H.create(f)
    assert(f.m:destroy_kernel(id))
    s, msg, code = f.m:serve_jupyter(id)
    assert.is_nil(s)
    assert.are.equal("KH_ENOTFOUND", code, msg)
    assert(f.m:close())
    s, msg, code = f.m:serve_jupyter(id)
    assert.is_nil(s)
    assert.are.equal("KH_ECLOSED", code, msg)
  end)

  it("jupyter_connection_file_mode", function()
    local id = H.create(f)
    local file, dir = temp_file("c.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    assert.are.equal("600", mode_of(file))
    assert.is_true(server:stop())
    assert.is_true(gone(file))
    P.rmtree(dir)
  end)

  it("jupyter_serve_stops_on_destroy", function()
    local id = H.create(f)
    local file, dir = temp_file("c.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    local stopped = 0
    server:on("stopped", function() stopped = stopped + 1 end)
    assert(f.m:destroy_kernel(id))
    H.wait(f, function() return stopped > 0 end, "the server to stop")
    assert.is_true(server:stop()) -- stopped already
    assert.are.equal(1, stopped)
    assert.is_true(gone(file))
    P.rmtree(dir)
  end)

  it("jupyter_serve_stops_on_manager_close", function()
    local id = H.create(f)
    local file, dir = temp_file("c.json")
    local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
    local stopped = 0
    server:on("stopped", function() stopped = stopped + 1 end)
    assert(f.m:close())
    assert.are.equal(1, stopped) -- during close()
    assert.is_true(gone(file))
    -- Every method is safe on a server whose manager closed.
    assert.is_true(server:info().stopping)
    assert.are.equal(file, server:connection_file())
    assert.is_true(server:stop())
    assert.are.equal(server, server:on("stopped", function() stopped = stopped + 1 end))
    assert.are.equal(1, stopped)
    P.rmtree(dir)
  end)

  it("lua_jupyter_server_gc_and_close", function()
    -- A collected server stops, and its callbacks are dropped, not called; a to-be-closed one
    -- (Lua 5.4) stops at the end of its scope.
    local id = H.create(f)
    local file, dir = temp_file("c.json")
    local weak = setmetatable({}, { __mode = "k" })
    local called = 0
    do
      local server = assert(f.m:serve_jupyter(id, { connection_file = file }))
      server:on("stopped", function() called = called + 1 end)
      weak[server] = true
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
    assert.is_true(gone(file))
    -- The kernel can be served again; stopping that server runs the loop, where the collected
    -- one's STOPPED comes too.
    local again = assert(f.m:serve_jupyter(id, { connection_file = file }))
    assert.is_true(again:stop())
    assert.are.equal(0, called)
    if _VERSION == "Lua 5.4" then
      local chunk = assert(load([[
        local m, id, file = ...
        do
          local server <close> = assert(m:serve_jupyter(id, { connection_file = file }))
          assert(io.open(file, "r")):close()
        end
      ]]))
      chunk(f.m, id, file)
      assert.is_true(gone(file))
    end
    P.rmtree(dir)
  end)
end)
