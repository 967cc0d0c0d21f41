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

local function mode_of(path) return P.sh("stat -c %a " .. P.quote(path)):gsub("%s+$", "") end

-- A call the binding refused as it does every runtime failure: nil, msg, code.
local function refused(code, s, msg, got)
  assert.is_nil(s)
  assert.are.equal(code, got, msg)
  assert.is_string(msg)
  return msg
end

describe("jupyter", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  -- Serves kernel id on connection.json in a fresh directory (`key` spells the option: the core
  -- takes connection_file and connectionFile alike); sv.stopped counts its "stopped" callbacks,
  -- and sv.done() checks the server removed its file before it removes the directory.
  local function serve(id, key)
    local sv = { dir = P.mkdtemp("kh-lua-jupyter-"), stopped = 0 }
    sv.file = sv.dir .. "/connection.json"
    sv.server = assert(f.m:serve_jupyter(id, { [key or "connection_file"] = sv.file }))
    sv.server:on("stopped", function() sv.stopped = sv.stopped + 1 end)
    function sv.done()
      assert.is_true(gone(sv.file))
      P.rmtree(sv.dir)
    end
    return sv
  end

  it("jupyter_attach_live_host", function()
    local id, k = H.create(f)
    local sv = serve(id)
    local server = sv.server
    assert.are.equal(id, server.kernel_id)
    assert.are.equal(sv.file, server:connection_file())
    local info = server:info()
    assert.are.equal(sv.file, info.connection_file)
    assert.are.same(json.decode(P.read_file(sv.file)), info.connection)
    assert.are.equal("127.0.0.1", info.connection.ip)
    assert.are.equal("tcp", info.connection.transport)
    assert.are.equal("hmac-sha256", info.connection.signature_scheme)
    assert.is_true(#info.connection.key >= 32)
    assert.is_true(info.connection.shell_port > 0)
    assert.is_false(info.stopping)

    -- The host's loop turns while the client runs, and the host sees the wire's cells among its
    -- own events of the kernel.
    local turns, marker_turns, marker_exec = 0, -1, nil
    f.m:on_kernel_event(id, "stream", function(d)
      if marker_exec == nil and d.text:find("wire-marker 42", 1, true) then
        marker_turns, marker_exec = turns, d.execution_id
      end
    end)
    local client = attach(sv.file)
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
    assert.are.equal(0, sv.stopped)

    -- Stopping: "stopped" once, the file gone, the kernel running on with the wire's namespace.
    assert.is_true(server:stop())
    assert.are.equal(1, sv.stopped)
    assert.is_true(server:info().stopping)
    assert.are.equal("43", H.exec(k, "wire_value + 1").result.data["text/plain"])
    sv.done()
  end)

  it("jupyter_attach_shutdown", function()
    local id, k = H.create(f)
    local sv = serve(id, "connectionFile")
    local notes = {}
    sv.server:on("shutdown", function(d) notes[#notes + 1] = "restart=" .. tostring(d.restart) end)
    sv.server:on("stopped", function() notes[#notes + 1] = "stopped" end)
    local client = attach(sv.file, "--shutdown")
    host_loop(f, client, function() end)
    assert.are.equal("shutdown_reply", client.result().shutdown.reply)
    H.wait(f, function() return #notes == 2 end, "the server to stop")
    assert.are.same({ "restart=false", "stopped" }, notes)
    assert.is_not_nil(f.m:get_kernel(id))
    assert.are.equal("42", H.exec(k, "6 * 7").result.data["text/plain"])
    sv.done()
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
      local msg = refused("KH_EOPTION", f.m:serve_jupyter(id, case[1]))
      assert.is_truthy(msg:find(case[2], 1, true), msg)
    end
    -- Misuse raises.
    assert.has_error(function() f.m:serve_jupyter(id, "opts") end)
    assert.has_error(function() f.m:serve_jupyter(nil) end)
    assert.has_error(function() f.m:serve_jupyter(id, { ip = print }) end)
    -- Nothing was left serving: the kernel can be served now.
    local sv = serve(id)
    assert.is_true(sv.server:stop())
    sv.done()
  end)

  it("jupyter_serve_twice", function()
    local id = H.create(f)
    local one = serve(id)
    local two = one.dir .. "/two.json"
    local msg = refused("KH_EEXIST", f.m:serve_jupyter(id, { connection_file = two }))
    assert.is_truthy(msg:find(id, 1, true), msg)
    assert.is_true(gone(two))
    assert.is_false(one.server:info().stopping)
    assert.is_true(one.server:stop())
    local again = serve(id)
    assert.is_true(again.server:stop())
    one.done()
    again.done()
  end)

  it("jupyter_stop_twice", function()
    local id = H.create(f)
    local sv = serve(id)
    assert.is_true(sv.server:stop())
    assert.are.equal(1, sv.stopped)
    assert.is_true(sv.server:stop()) -- stopped already: no error, no second "stopped"
    assert(f.m:close())
    assert.is_true(sv.server:stop())
    assert.are.equal(1, sv.stopped)
    sv.done()
  end)

  it("jupyter_serve_unknown_kernel", function()
    refused("KH_ENOTFOUND", f.m:serve_jupyter("no-such-kernel"))
    local id = H.create(f)
    assert(f.m:destroy_kernel(id))
    refused("KH_ENOTFOUND", f.m:serve_jupyter(id))
    assert(f.m:close())
    refused("KH_ECLOSED", f.m:serve_jupyter(id))
  end)

  it("jupyter_connection_file_mode", function()
    local id = H.create(f)
    local sv = serve(id)
    assert.are.equal("600", mode_of(sv.file))
    assert.is_true(sv.server:stop())
    sv.done()
  end)

  it("jupyter_serve_stops_on_destroy", function()
    local id = H.create(f)
    local sv = serve(id)
    assert(f.m:destroy_kernel(id))
    H.wait(f, function() return sv.stopped > 0 end, "the server to stop")
    assert.is_true(sv.server:stop()) -- stopped already
    assert.are.equal(1, sv.stopped)
    sv.done()
  end)

  it("jupyter_serve_stops_on_manager_close", function()
    local id = H.create(f)
    local sv = serve(id)
    local server = sv.server
    assert(f.m:close())
    assert.are.equal(1, sv.stopped) -- during close()
    assert.is_true(gone(sv.file))
    -- Every method is safe on a server whose manager closed.
    assert.is_true(server:info().stopping)
    assert.are.equal(sv.file, server:connection_file())
    assert.is_true(server:stop())
    assert.are.equal(server, server:on("stopped", function() sv.stopped = sv.stopped + 1 end))
    assert.are.equal(1, sv.stopped)
    sv.done()
  end)

  it("lua_jupyter_server_gc_and_close", function()
    -- A collected server stops, and its callbacks are dropped, not called; a to-be-closed one
    -- (Lua 5.4) stops at the end of its scope.
    local id = H.create(f)
    local weak = setmetatable({}, { __mode = "k" })
    local sv
    do
      sv = serve(id)
      weak[sv.server] = true
      sv.server = nil
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
    assert.is_true(gone(sv.file))
    -- The kernel can be served again; stopping that server runs the loop, where the collected
    -- one's STOPPED comes too.
    local again = serve(id)
    assert.is_true(again.server:stop())
    assert.are.equal(0, sv.stopped)
    if _VERSION == "Lua 5.4" then
      local chunk = assert(load([[
        local m, id, file = ...
        do
          local server <close> = assert(m:serve_jupyter(id, { connection_file = file }))
          assert(io.open(file, "r")):close()
        end
      ]]))
      chunk(f.m, id, again.file)
    end
    sv.done()
    again.done()
  end)
end)
