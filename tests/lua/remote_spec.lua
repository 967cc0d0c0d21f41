-- remote_spec.lua: mode "remote" kernels on a Jupyter Server (tests/remote/gateway.py, one per
-- spec file, behind a proxy the test can cut, a server it can kill and start again). Registered
-- as lua/remote and luajit/remote only (no -worker variant: mode "remote" does not depend on
-- KH_TEST_MODE). Names match tests/c/test_remote.c and tests/node/remote.test.js.
local kernelhost = require("kernelhost")
local H = require("helpers")
local P = require("proc")
local json = require("dkjson") -- a dependency of busted itself

local REMOTE = kernelhost.KernelMode.REMOTE
local GATEWAY_VARS = { "KERNELHOST_GATEWAY_URL", "KERNELHOST_GATEWAY_TOKEN",
                       "KERNELHOST_GATEWAY_KERNEL_NAME", "KERNELHOST_GATEWAY_HEADERS" }

local function json_decode(line)
  local v, _, err = json.decode(line)
  assert(v ~= nil, ("gateway.py wrote %q: %s"):format(line, tostring(err)))
  return v
end

-- The fixture process, its stdin through io.popen and its stdout through a FIFO (plain Lua has
-- no two-way pipe): its first line {url, server_url, token, pid}, then one JSON answer line per
-- command line. Closing its stdin stops the server and removes its files.
local Gateway = {}
Gateway.__index = Gateway

-- kernelhost_jupyter: also serve kernelspec "kernelhost", that kernelhost-jupyter's own.
function Gateway.start(kernelhost_jupyter)
  local g = setmetatable({}, Gateway)
  g.dir = P.mkdtemp("kh-gateway-lua-")
  local fifo = g.dir .. "/out"
  P.sh("mkfifo " .. P.quote(fifo))
  local script = P.sh("cd ../remote && pwd"):gsub("%s+$", "") .. "/gateway.py"
  local args = kernelhost_jupyter and (" --kernelhost-jupyter " .. P.quote(kernelhost_jupyter))
               or ""
  g.stdin = assert(io.popen("exec /usr/bin/python3 " .. P.quote(script) .. args .. " > " ..
                            P.quote(fifo), "w"))
  g.stdout = assert(io.open(fifo, "r")) -- opens once the shell has opened the other end
  local line = assert(g.stdout:read("l"), "gateway.py exited before it served")
  local info = json_decode(line)
  assert(info.url and info.token, "gateway.py said " .. line)
  g.url, g.token = info.url, info.token
  return g
end

-- Sends a command without waiting for its answer (from an event callback, where the loop must
-- not wait); answer() reads it.
function Gateway:post(cmd)
  assert(self.stdin:write(cmd, "\n"))
  assert(self.stdin:flush())
end

function Gateway:answer(cmd)
  local line = assert(self.stdout:read("l"), "gateway.py exited")
  local a = json_decode(line)
  assert(a.ok == true, ("gateway.py %s: %s"):format(tostring(cmd), tostring(a.error)))
  return a
end

function Gateway:send(cmd)
  self:post(cmd)
  return self:answer(cmd)
end

-- The body of the last POST /api/kernels that went through the proxy.
function Gateway:last_post()
  local posts = self:send("posts").posts
  assert(#posts > 0, "no POST /api/kernels went through the proxy")
  return posts[#posts]
end

-- The server's kernel ids (id -> true), asked of the server directly.
function Gateway:kernel_ids()
  local set = {}
  for _, k in ipairs(self:send("kernels").kernels) do set[k.id] = true end
  return set
end

function Gateway:stop()
  self.stdin:close() -- waits for gateway.py, which stops everything on end of input
  self.stdout:close()
  P.rmtree(self.dir)
end

describe("remote", function()
  local gw, f

  -- ctest gives KH_JUPYTER_EXE (remote_options_passed_to_kernelhost serves its kernelspec).
  setup(function() gw = Gateway.start(os.getenv("KH_JUPYTER_EXE")) end)
  teardown(function() if gw then gw:stop() end end)

  -- A manager on the fixture's gateway; closing it destroys its kernels, which shuts the remote
  -- ones down.
  local function gateway_fixture(extra)
    local g = { url = gw.url, token = gw.token, reconnect_timeout = 3000, poll_interval = 500 }
    for k, v in pairs(extra or {}) do g[k] = v end
    return H.fixture({ gateway = g })
  end

  before_each(function() f = gateway_fixture() end)
  after_each(function() H.close(f) end)

  local function create(extra)
    local o = { mode = REMOTE }
    for k, v in pairs(extra or {}) do o[k] = v end
    local id, msg, code = f.m:create_kernel(o)
    assert(id, ("create_kernel: %s: %s"):format(tostring(code), tostring(msg)))
    return id, f.m:get_kernel(id)
  end

  -- The remote (server's) kernel id of local kernel id.
  local function remote_id(id)
    local info = assert(f.m:kernel_info(id))
    assert(type(info.remote) == "table" and type(info.remote.id) == "string",
           "no remote.id in the kernel info of " .. id)
    return info.remote.id
  end

  -- The types of a result's events, each run of stream events counted once (ipykernel may send
  -- a print's text and its newline apart).
  local function event_types(r)
    local out = {}
    for _, o in ipairs(r.outputs) do
      local t = o.type == "status" and ("status:" .. o.data.execution_state) or o.type
      if not (t == "stream" and out[#out] == "stream") then out[#out + 1] = t end
    end
    return out
  end

  local function outputs_of(r, type)
    local out = {}
    for _, o in ipairs(r.outputs) do if o.type == type then out[#out + 1] = o.data end end
    return out
  end

  local function stream_text(r)
    local parts = {}
    for _, d in ipairs(outputs_of(r, "stream")) do parts[#parts + 1] = d.text end
    return table.concat(parts)
  end

  -- Posts cmd to the fixture on kernel id's first stream event (its answer is read later, out
  -- of the callback); the returned table's `sent` is then true.
  local function post_on_first_stream(id, cmd)
    local st = { sent = false }
    local sub
    sub = f.m:on_kernel_event(id, kernelhost.KernelEvents.STREAM, function()
      f.m:off_kernel_event(sub)
      gw:post(cmd)
      st.sent = true
    end)
    return st
  end

  it("remote_execute_events_in_order", function()
    local _, k = create()
    local r = H.exec(k, 'print("hi"); from IPython.display import display, HTML; ' ..
                        'display(HTML("<b>x</b>")); 40+2')
    assert.are.equal("ok", r.status)
    assert.are.equal(1, r.execution_count)
    assert.are.equal("42", r.result.data["text/plain"])
    assert.are.same({ "status:busy", "stream", "display_data", "execute_result", "status:idle" },
                    event_types(r))
    assert.are.equal("hi\n", stream_text(r))
    assert.are.equal("stdout", outputs_of(r, "stream")[1].name)
    assert.are.equal("<b>x</b>", outputs_of(r, "display_data")[1].data["text/html"])
    assert.are.equal("42", outputs_of(r, "execute_result")[1].data["text/plain"])

    local e = H.exec(k, 'raise ValueError("bad")')
    assert.are.equal("error", e.status)
    assert.are.equal("ValueError", e.error.ename)
    assert.are.equal("bad", e.error.evalue)
    local errs = outputs_of(e, "execute_error")
    assert.are.equal(1, #errs)
    assert.are.equal("ValueError", errs[1].ename)
    assert.are.same({ "status:busy", "execute_error", "status:idle" }, event_types(e))
  end)

  it("remote_input_reply", function()
    local id, k = create()
    local asked = {}
    f.m:on_kernel_event(id, kernelhost.KernelEvents.INPUT_REQUEST, function(d)
      asked[#asked + 1] = { prompt = d.prompt, password = d.password }
      assert(k:input_reply("kh"))
    end)
    local r = H.exec(k, 'input("name? ")', { allow_stdin = true })
    assert.are.equal("ok", r.status)
    assert.are.same({ { prompt = "name? ", password = false } }, asked)
    assert.are.equal("'kh'", r.result.data["text/plain"])
  end)

  it("remote_interrupt", function()
    local _, k = create()
    -- H.start waits for the cell's own marker: the cell itself runs (not ipykernel's code
    -- around it) when the SIGINT the server sends arrives.
    local _, st = H.start(f, k, "import time; time.sleep(30)")
    assert(k:interrupt())
    H.wait(f, function() return st.done end, "the interrupted cell's reply")
    assert(st.result, ("execute: %s: %s"):format(tostring(st.code), tostring(st.msg)))
    assert.are.equal("error", st.result.status)
    assert.are.equal("KeyboardInterrupt", st.result.error.ename)
  end)

  it("remote_restart", function()
    local _, k = create()
    assert.are.equal("ok", H.exec(k, "x = 1").status)
    assert(k:restart())
    local r = H.exec(k, "x")
    assert.are.equal("error", r.status)
    assert.are.equal("NameError", r.error.ename)
    assert.are.equal(1, r.execution_count)
  end)

  it("remote_destroy_shuts_down", function()
    local id = create()
    local rid = remote_id(id)
    assert.is_true(gw:kernel_ids()[rid], "the server does not run " .. rid)
    assert(f.m:destroy_kernel(id))
    assert.is_nil(f.m:get_kernel(id))
    assert.is_nil(gw:kernel_ids()[rid], "the server still runs " .. rid)
  end)

  it("remote_list_kernels_and_specs", function()
    local id = create()
    local rid = remote_id(id)
    local remote, msg, code = f.m:list_remote_kernels()
    assert(remote, ("list_remote_kernels: %s: %s"):format(tostring(code), tostring(msg)))
    local found = false
    for _, r in ipairs(remote) do found = found or r.id == rid end
    assert.is_true(found, rid .. " not in list_remote_kernels()")
    local specs
    specs, msg, code = f.m:list_kernelspecs()
    assert(specs, ("list_kernelspecs: %s: %s"):format(tostring(code), tostring(msg)))
    assert.are.equal("table", type(specs.kernelspecs.python3))
    assert.are.equal("python3", specs.kernelspecs.python3.name)
    local mode
    for _, k in ipairs(f.m:list_kernels()) do if k.id == id then mode = k.mode end end
    assert.are.equal(REMOTE, mode)
  end)

  it("remote_connect_by_id", function()
    local id, k = create()
    assert.are.equal("ok", H.exec(k, "x = 5").status)
    local rid = remote_id(id)
    local bid, msg, code = f.m:connect_kernel(rid)
    assert(bid, ("connect_kernel: %s: %s"):format(tostring(code), tostring(msg)))
    assert.are_not.equal(id, bid)
    assert.are.equal(rid, remote_id(bid))
    local b = f.m:get_kernel(bid)
    local r = H.exec(b, "x")
    assert.are.equal("ok", r.status)
    assert.are.equal("5", r.result.data["text/plain"])
    assert(f.m:destroy_kernel(bid))
    assert.is_true(gw:kernel_ids()[rid], "destroying the connected kernel shut A down")
    r = H.exec(k, "x")
    assert.are.equal("ok", r.status)
    assert.are.equal("5", r.result.data["text/plain"])
  end)

  it("remote_bad_token", function()
    local g = gateway_fixture({ token = gw.token .. "-wrong" })
    local id, _, code = g.m:create_kernel({ mode = REMOTE })
    assert.is_nil(id)
    assert.are.equal("KH_EAUTH", code)
    assert.are.same({}, g.m:list_kernels())
    H.close(g)
  end)

  it("remote_unreachable", function()
    local token = "kh-secret-token-never-shown"
    local g = H.fixture({ gateway = { url = "http://127.0.0.1:1", token = token,
                                      reconnect_timeout = 3000 } })
    local id, msg, code = g.m:create_kernel({ mode = REMOTE })
    assert.is_nil(id)
    assert.are.equal("KH_EREMOTE", code, msg)
    assert.is_truthy(msg:find("127.0.0.1:1", 1, true), msg)
    assert.is_falsy(msg:find(token, 1, true), msg)
    H.close(g)
  end)

  it("remote_websocket_cut_mid_cell", function()
    local id, k = create()
    local cut = post_on_first_stream(id, "cut")
    local r = H.exec(k, "import time\nfor i in range(5):\n    print(i, flush=True); time.sleep(0.3)")
    assert.is_true(cut.sent, "no stream event came")
    assert.is_true(gw:answer("cut").cut > 0, "the proxy had no connection to cut")
    assert.are.equal("ok", r.status)
    assert.are.equal("0\n1\n2\n3\n4\n", stream_text(r))
    -- Callbacks saw each output once too.
    assert.are.equal("0\n1\n2\n3\n4\n", H.stream_text(f, nil))
  end)

  it("remote_server_killed_mid_cell", function()
    local id, k = create()
    local killed = post_on_first_stream(id, "kill")
    local r, msg, code = k:execute('print("<started>", flush=True)\nimport time; time.sleep(30)')
    local waited, werr = true, nil
    if killed.sent then
      gw:answer("kill")
      waited, werr = pcall(H.wait, f, function()
        for _, e in ipairs(H.statuses(f, "dead")) do if e.kernel_id == id then return true end end
        return false
      end, "a dead status")
      gw:send("start") -- the next specs need the server, whatever happened here
    end
    assert.is_true(killed.sent, "no stream event came")
    assert(waited, werr)
    assert.is_nil(r)
    assert.are.equal("KH_EKERNELDEAD", code, msg)
    local dead
    for _, e in ipairs(H.statuses(f, "dead")) do if e.kernel_id == id then dead = e end end
    assert.is_not_nil(dead.data.reason, "dead without a reason")
    local _, k2 = create()
    local r2 = H.exec(k2, "1+1")
    assert.are.equal("ok", r2.status)
    assert.are.equal("2", r2.result.data["text/plain"])
  end)

  it("remote_options_refused", function()
    for _, case in ipairs({ { "permissions", { read = { "/tmp" } } },
                            { "filesystem", { enabled = true, root = "/tmp" } },
                            { "limits", { memory_bytes = 268435456 } } }) do
      local name, value = case[1], case[2]
      local id, msg, code = f.m:create_kernel({ mode = REMOTE, [name] = value })
      assert.is_nil(id, name)
      assert.are.equal("KH_ENOTSUP", code, name .. ": " .. tostring(msg))
      assert.is_truthy(msg:find("'" .. name, 1, true), name .. ": " .. msg)
      -- The kernelspec decides, and Debian's ipykernel one takes no such options.
      assert.is_truthy(msg:find('kernelspec "python3"', 1, true), name .. ": " .. msg)
    end
    assert.are.same({}, f.m:list_kernels())
    assert.are.same({}, gw:kernel_ids())
    -- What no remote kernel can honour is refused at once, whatever the kernelspec.
    for _, case in ipairs({ { "auto_restart", true }, { "thread", "host" },
                            { "figure_formats", { "svg" } } }) do
      local name, value = case[1], case[2]
      local id, msg, code = f.m:create_kernel({ mode = REMOTE, [name] = value })
      assert.is_nil(id, name)
      assert.are.equal("KH_ENOTSUP", code, name .. ": " .. tostring(msg))
    end
    -- Host functions: a remote kernel has no way back into this process.
    local _, k = create()
    local ok, msg, code = k:expose("f", function() return 1 end)
    assert.is_nil(ok)
    assert.are.equal("KH_ENOTSUP", code, msg)
    assert.is_truthy(msg:find("remote", 1, true), msg)
  end)

  it("remote_options_passed_to_kernelhost", function()
    assert(os.getenv("KH_JUPYTER_EXE"),
           "KH_JUPYTER_EXE must name the kernelhost-jupyter whose kernelspec the server serves")
    local id, k = create({ kernel_name = "kernelhost", permissions = { read = { "/tmp" } },
                           limits = { memory_bytes = 2000000000 } })
    -- Said in the kernel's info: what went to the kernelspec, in which variable.
    local remote = assert(f.m:kernel_info(id)).remote
    assert.are.same({ "permissions", "limits" }, remote.passed_options)
    assert.are.equal("KERNEL_KERNELHOST_OPTIONS", remote.passed_in)
    -- And in the create request.
    local opts = json_decode(gw:last_post().env.KERNEL_KERNELHOST_OPTIONS)
    assert.are.same({ "/tmp" }, opts.permissions.read)
    assert.are.equal(2000000000, opts.limits.memory_bytes)
    -- The remote kernel is a kernelhost kernel.
    local r = H.exec(k, "import kernelhost; 6 * 7")
    assert.are.equal("ok", r.status)
    assert.are.equal("42", r.result.data["text/plain"])
  end)

  it("remote_no_gateway", function()
    -- The manager takes the gateway's keys from KERNELHOST_GATEWAY_* when they are set, and
    -- plain Lua cannot unset a variable: the manager is made in a child Lua without them.
    local unset = {}
    for _, v in ipairs(GATEWAY_VARS) do unset[#unset + 1] = "-u " .. v end
    local path = P.script([[
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      local id, msg, code = m:create_kernel({ mode = kernelhost.KernelMode.REMOTE })
      print("id=" .. tostring(id))
      print("code=" .. tostring(code))
      print("msg=" .. tostring(msg):gsub("\n", " "))
      local l, _, lcode = m:list_remote_kernels()
      print("list=" .. tostring(l) .. " " .. tostring(lcode))
      local s, _, scode = m:list_kernelspecs()
      print("specs=" .. tostring(s) .. " " .. tostring(scode))
      m:close()
    ]])
    local fh = assert(P.popen("env " .. table.concat(unset, " ") .. " " .. P.LUA .. " " ..
                              P.quote(path) .. " 2>&1"))
    local out = fh:read("a")
    local ok = fh:close()
    os.remove(path)
    assert.is_truthy(ok, out)
    local kv = {}
    for key, v in out:gmatch("([%w_]+)=([^\n]*)") do kv[key] = v end
    assert.are.equal("nil", kv.id, out)
    assert.are.equal("KH_ENOTSUP", kv.code, out)
    assert.is_truthy(kv.msg:find("gateway", 1, true), out)
    assert.are.equal("nil KH_ENOTSUP", kv.list, out)
    assert.are.equal("nil KH_ENOTSUP", kv.specs, out)
  end)

  it("remote_complete", function()
    local _, k = create()
    local c = assert(k:complete("import o", 8))
    local has_os = false
    for _, m in ipairs(c.matches) do has_os = has_os or m == "os" end
    assert.is_true(has_os, "no 'os' among the matches")
    assert.are.equal("incomplete", assert(k:is_complete("for i in x:")).status)
    assert.is_true(assert(k:inspect("len", 3)).found)
  end)

  it("remote_env_passed_in_create", function()
    create({ kernel_name = "python3", env = { KERNEL_USERNAME = "alice" } })
    local post = gw:last_post()
    assert.are.equal("python3", post.name)
    assert.are.equal("alice", post.env.KERNEL_USERNAME)
  end)

  it("remote_kernel_culled", function()
    local id, k = create()
    gw:send("delete " .. remote_id(id))
    local dead
    H.wait(f, function()
      for _, e in ipairs(H.statuses(f, "dead")) do if e.kernel_id == id then dead = e end end
      return dead ~= nil
    end, "the culled kernel's dead status")
    assert.is_truthy(tostring(dead.data.reason.message):find("gone", 1, true),
                     tostring(dead.data.reason.message))
    local r, msg, code = k:execute("1")
    assert.is_nil(r)
    assert.are.equal("KH_EKERNELDEAD", code, msg)
  end)

  it("remote_comm_buffers", function()
    local _, k = create()
    local r = H.exec(k, "def _echo(comm, msg):\n" ..
                        "    @comm.on_msg\n" ..
                        "    def _r(m):\n" ..
                        "        comm.send({'got': m['content']['data']}, " ..
                        "buffers=[bytes(x)[::-1] for x in m['buffers']])\n" ..
                        "get_ipython().kernel.comm_manager.register_target('echo', _echo)")
    assert.are.equal("ok", r.status)
    local comm = assert(k:open_comm("echo", {}))
    local got
    comm:on_msg(function(m) got = m end)
    assert(comm:send({ x = 1 }, { buffers = { "abc" } }))
    H.wait(f, function() return got ~= nil end, "the echo's comm_msg")
    assert.are.equal(1, got.data.got.x)
    assert.are.equal("cba", got.buffers[1])
  end)

  it("remote_kernel_crash_restarted", function()
    local id, k = create()
    assert.are.equal("ok", H.exec(k, "x = 1").status)
    -- The kernel's process dies; the server's restarter starts a new one and says so.
    local r, msg, code = k:execute("import os; os._exit(1)")
    assert.is_nil(r)
    assert.are.equal("KH_EKERNELDEAD", code, msg)
    r = H.exec(k, "'x' in globals()") -- waits for the fresh kernel
    local states = {}
    for _, e in ipairs(H.events(f, "status")) do
      if e.kernel_id == id then states[#states + 1] = e.data.execution_state end
    end
    assert.is_truthy(table.concat(states, " "):find("restarting", 1, true),
                     "no restarting status in " .. table.concat(states, " "))
    assert.are.equal("ok", r.status)
    assert.are.equal("False", r.result.data["text/plain"])
    assert.are.equal(1, r.execution_count)
  end)

  it("remote_execute_options", function()
    local _, k = create()
    -- silent: no execute_result, the counter stays.
    local s = H.exec(k, "y = 41\ny + 1", { silent = true })
    assert.are.equal("ok", s.status)
    assert.is_nil(s.result)
    assert.are.equal(0, #outputs_of(s, "execute_result"))
    local y = H.exec(k, "y")
    assert.are.equal(1, y.execution_count)
    assert.are.equal("41", y.result.data["text/plain"])
    -- allow_stdin false: input() raises, no input_request.
    local i = H.exec(k, "input('?')", { allow_stdin = false })
    assert.are.equal("error", i.status)
    assert.are.equal("StdinNotImplementedError", i.error.ename)
    assert.are.equal(0, #outputs_of(i, "input_request"))
    -- timeout: the core interrupts the remote cell.
    local t = H.exec(k, "import time; time.sleep(30)", { timeout = 1000 })
    assert.are.equal("error", t.status)
    assert.are.equal("KeyboardInterrupt", t.error.ename)
  end)
end)
