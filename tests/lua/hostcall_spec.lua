-- hostcall_spec.lua: host functions from Lua: kernel:expose (functions that answer with their
-- return value, and async ones that answer later through a kernelhost.HostCall), the values a
-- call carries both ways, errors, interrupts, destroys and re-entrant requests. Names match
-- tests/c and tests/node; every spec runs in the mode under test (KH_TEST_MODE).
local kernelhost = require("kernelhost")
local H = require("helpers")
local NULL = kernelhost.null

local function py(lines) return table.concat(lines, "\n") end

-- Lua 5.1 (LuaJIT) has no table.pack (busted's penlight adds one; the spec does not rely on it).
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- Runs code; returns the text/plain of its result. Fails the spec when the cell raised.
local function value(k, code)
  local r = H.exec(k, code)
  assert.are.equal("ok", r.status,
    r.error and ("%s: %s"):format(tostring(r.error.ename), tostring(r.error.evalue)) or "")
  return r.result and r.result.data["text/plain"]
end

-- Runs code that must raise; returns the reply's error ({ename, evalue, traceback}).
local function raised(k, code)
  local r = H.exec(k, code)
  assert.are.equal("error", r.status, "the cell did not raise")
  return r.error
end

describe("hostcall", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("lua_hostcall_expose", function()
    local _, k = H.create(f)
    local seen = {}
    assert.is_true(k:expose("add", function(a, b)
      seen[#seen + 1] = { a, b }
      return a + b
    end))
    assert.are.equal("5", value(k, "import kernelhost\nkernelhost.host.add(2, 3)"))
    assert.are.equal("7", value(k, "kernelhost.call('add', 3, 4)"))
    assert.are.same({ { 2, 3 }, { 3, 4 } }, seen)
    -- The same name again replaces the function.
    assert.is_true(k:expose("add", function(a, b) return a * b end))
    assert.are.equal("6", value(k, "kernelhost.host.add(2, 3)"))
    -- nil withdraws it: the name is gone for Python, the old function is never called.
    assert.is_true(k:expose("add", nil))
    assert.is_truthy(raised(k, "kernelhost.host.add(2, 3)").evalue:find("add", 1, true))
    assert.are.equal(2, #seen)
    -- Misuse raises; a name Python cannot spell is refused by the core.
    assert.has_error(function() k:expose(nil, function() end) end)
    assert.has_error(function() k:expose("f", 42) end)
    assert.has_error(function() k:expose("f", function() end, { asink = true }) end)
    local ok, _, code = k:expose("not a name", function() end)
    assert.is_nil(ok)
    assert.are.equal("KH_EINVAL", code)
    ok, _, code = k:expose("", function() end)
    assert.are.equal("KH_EINVAL", code)
    -- A name exposed after the kernel ran (and failed to find it) is callable from then on.
    assert.is_truthy(raised(k, "kernelhost.host.later_on()").evalue:find("later_on", 1, true))
    assert(k:expose("later_on", function() return "now" end))
    assert.are.equal("'now'", value(k, "kernelhost.host.later_on()"))
    -- A kernel object whose kernel is gone: KH_ENOTFOUND.
    local id2, k2 = H.create(f)
    assert(f.m:destroy_kernel(id2))
    ok, _, code = k2:expose("f", function() end)
    assert.is_nil(ok)
    assert.are.equal("KH_ENOTFOUND", code)
  end)

  it("hostcall_value_types", function()
    local _, k = H.create(f)
    local got
    assert(k:expose("echo", function(...)
      got = pack(...)
      return ...
    end))
    -- Python -> Lua: None is nil as an argument, kernelhost.null inside tables; ints are Lua
    -- integers to 2^63, floats stay floats; an empty list keeps its kind. On Lua 5.1 (LuaJIT),
    -- whose numbers are doubles, an int beyond 2^53 is the string of its digits (lkh-compat.h),
    -- never a rounded number.
    value(k, py({
      "import kernelhost",
      "kernelhost.host.echo(None, True, False, 2**63 - 1, -2**63, 1.5, 2.0, 'é😀', ",
      "                     [1, None, [2]], {'a': {'b': None}, 'n': []})",
    }))
    assert.are.equal(10, got.n)
    assert.is_nil(got[1])
    assert.are.equal(true, got[2])
    assert.are.equal(false, got[3])
    assert.are.equal(1.5, got[6])
    assert.are.equal(2, got[7])
    if math.type then
      assert.are.equal(math.maxinteger, got[4])
      assert.are.equal(math.mininteger, got[5])
      assert.are.equal("integer", math.type(got[4]))
      assert.are.equal("float", math.type(got[6]))
      assert.are.equal("float", math.type(got[7]))
    else
      assert.are.equal("9223372036854775807", got[4])
      assert.are.equal("-9223372036854775808", got[5])
    end
    assert.are.equal("é😀", got[8])
    assert.are.same({ 1, NULL, { 2 } }, got[9])
    assert.are.equal(NULL, got[10].a.b)
    assert.are.same({}, got[10].n)
    -- Python -> Lua -> Python: every value comes back equal, and of its type. On 5.1 the ints
    -- beyond 2^53 come back as the strings Lua got, and 2.0 as the int 2 (5.1 cannot tell them
    -- apart; an integral number goes to Python as an int).
    assert.are.equal("True", value(k, py({
      "vals = [None, True, False, 0, -1, 2**53, -2**53, 2**53 + 1, 2**63 - 1, -2**63, 1.5, 2.0,",
      "        -0.25, '', 'é😀', [], [1, [2, [3]]], {}, {'a': 1, 'b': [None, {'c': 'd'}]},",
      "        [None, None]]",
      math.type and "want = vals" or py({
        "want = [None, True, False, 0, -1, 2**53, -2**53, '9007199254740993',",
        "        '9223372036854775807', '-9223372036854775808', 1.5, 2, -0.25, '', 'é😀', [],",
        "        [1, [2, [3]]], {}, {'a': 1, 'b': [None, {'c': 'd'}]}, [None, None]]",
      }),
      "out = [kernelhost.host.echo(v) for v in vals]",
      "assert out == want, out",
      "assert [type(x) for x in out] == [type(v) for v in want], out",
      "all(type(a) is type(b) for a, b in zip(out[-2]['b'], want[-2]['b']))",
    })))
    -- Lua -> Python. Lua 5.1's largest integers are doubles: 2^62 and -2^63 are exact there,
    -- and any integral number (3.0 too) is an int to Python.
    assert(k:expose("lua_values", function()
      return {
        seq = { 10, 20, 30 }, map = { x = 1 }, empty = {}, empty_list = kernelhost.empty_array,
        int = math.maxinteger or 2 ^ 62, neg = math.mininteger or -2 ^ 63, float = 0.5,
        integral_float = 3.0, str = "é", null = NULL, yes = true,
        nested = { { 1 }, { a = { 2 } } },
      }
    end))
    assert.are.equal("True", value(k, py({
      "v = kernelhost.host.lua_values()",
      "want = {'seq': [10, 20, 30], 'map': {'x': 1}, 'empty': {}, 'empty_list': [],",
      "        'int': " .. (math.type and "2**63 - 1" or "2**62") .. ", 'neg': -2**63,",
      "        'float': 0.5, 'integral_float': 3.0,",
      "        'str': 'é', 'null': None, 'yes': True, 'nested': [[1], {'a': [2]}]}",
      "assert v == want, v",
      "assert type(v['integral_float']) is " .. (math.type and "float" or "int") ..
        " and type(v['int']) is int and type(v['float']) is float",
      "True",
    })))
    -- No value, nil and kernelhost.null are all None.
    assert(k:expose("nothing", function() end))
    assert(k:expose("null", function() return NULL end))
    assert.are.equal("(None, None)", value(k, "kernelhost.host.nothing(), kernelhost.host.null()"))
  end)

  it("lua_hostcall_strings_and_bytes", function()
    local _, k = H.create(f)
    local got
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    assert(k:expose("take", function(...)
      got = pack(...)
      return #got[1]
    end))
    -- Python bytes arrive as Lua strings, byte for byte, at any depth.
    assert.are.equal("256", value(k, py({
      "import kernelhost",
      "kernelhost.host.take(bytes(range(256)), b'', {'blob': b'\\x00\\xff', 'list': [b'\\x80']})",
    })))
    assert.are.equal(all, got[1])
    assert.are.equal("", got[2])
    assert.are.equal("\0\255", got[3].blob)
    assert.are.equal("\128", got[3].list[1])
    -- Lua strings that are not UTF-8 arrive as bytes; valid UTF-8 as str (b'abc' comes back str).
    assert(k:expose("give", function(v) return v end))
    assert(k:expose("blobs", function()
      return { all = all, deep = { { "\255\254" } }, text = "abc", [""] = "\192" }
    end))
    assert.are.equal("True", value(k, py({
      "assert kernelhost.host.give(bytes(range(256))) == bytes(range(256))",
      "assert kernelhost.host.give(b'abc') == 'abc'",
      "assert kernelhost.host.give('\\x00é') == '\\x00é'",
      "v = kernelhost.host.blobs()",
      "v == {'all': bytes(range(256)), 'deep': [[b'\\xff\\xfe']], 'text': 'abc', '': b'\\xc0'}",
    })))
    -- kernelhost.bytes(s) is bytes to Python whatever s holds; with {bytes = true} bytes arrive
    -- as such values, so a function tells them from str and passes them back unchanged.
    local b = kernelhost.bytes("abc")
    assert.are.equal("abc", tostring(b))
    assert.are.equal(3, #b)
    assert.is_true(b == kernelhost.bytes("abc"))
    assert.is_false(b == kernelhost.bytes("abd"))
    assert.has_error(function() kernelhost.bytes(42) end)
    assert(k:expose("as_bytes", function(s) return { kernelhost.bytes(s), kernelhost.bytes("") } end))
    assert.are.equal("[b'abc', b'']", value(k, "kernelhost.host.as_bytes('abc')"))
    local kinds
    assert(k:expose("keep", function(...)
      kinds = {}
      for i = 1, select("#", ...) do kinds[i] = type((select(i, ...))) end
      return { ... }
    end, { bytes = true }))
    assert.are.equal("True", value(k, py({
      "r = kernelhost.host.keep(b'ab', 'ab', b'', [b'\\xff'])",
      "r == [b'ab', 'ab', b'', [b'\\xff']] and [type(x) for x in r[:3]] == [bytes, str, bytes]",
    })))
    assert.are.same({ "userdata", "string", "userdata", "table" }, kinds)
    assert.has_error(function() k:expose("f", function() end, { bytes = 1 }) end)
  end)

  it("lua_hostcall_error_objects", function()
    local _, k = H.create(f)
    assert(k:expose("fails", function(why)
      if why == "plain" then error("no such entity", 0) end
      if why == "located" then error("boom") end
      if why == "table" then error({}) end
      error(setmetatable({}, { __tostring = function() return "an object's own words" end }))
    end))
    local function host_error(arg)
      return value(k, py({
        "import kernelhost",
        "try:",
        "    kernelhost.host.fails(" .. arg .. ")",
        "except kernelhost.HostError as e:",
        "    r = str(e)",
        "r",
      }))
    end
    assert.are.equal("'no such entity'", host_error("'plain'"))
    assert.is_truthy(host_error("'located'"):find("hostcall_spec.lua:%d+: boom"))
    assert.are.equal("'(error object is a table value)'", host_error("'table'"))
    assert.are.equal("\"an object's own words\"", host_error("'tostring'"))
    -- Unhandled, it is the cell's error; the kernel and the host go on.
    local err = raised(k, "kernelhost.host.fails('plain')")
    assert.are.equal("HostError", err.ename)
    assert.are.equal("no such entity", err.evalue)
    -- An async function's error() before it answered is its answer; call:error() likewise.
    assert(k:expose("later", function(call, how)
      if how == "raise" then error("failed at once", 0) end
      call:error("failed by handle")
    end, { async = true }))
    assert.are.equal("('failed at once', 'failed by handle')", value(k, py({
      "def msg(how):",
      "    try:",
      "        kernelhost.host.later(how)",
      "    except kernelhost.HostError as e:",
      "        return str(e)",
      "msg('raise'), msg('handle')",
    })))
    -- An error after the answer has nobody in Python to hear it: the "error" handlers do.
    local reported = {}
    f.m:on_kernel_event(nil, "error", function(msg, info) reported[#reported + 1] = { msg, info } end)
    assert(k:expose("late_raise", function(call)
      call:return_(1)
      error("after the answer", 0)
    end, { async = true }))
    assert.are.equal("1", value(k, "kernelhost.host.late_raise()"))
    assert.are.equal(1, #reported)
    assert.is_truthy(reported[1][1]:find("after the answer", 1, true))
    assert.are.equal(k.id, reported[1][2].kernel_id)
    assert.are.equal("2", value(k, "1 + 1"))
  end)

  it("lua_hostcall_handle", function()
    local _, k = H.create(f)
    local pending = {}
    assert(k:expose("move", function(call, id, x, y)
      pending[#pending + 1] = { call = call, args = { id, x, y } }
    end, { async = true }))
    local _, st = H.submit(k, "import kernelhost\nkernelhost.host.move(3, 1.5, 2) == {'x': 1.5, 'y': 2}")
    H.wait(f, function() return #pending == 1 end, "the call")
    local call = pending[1].call
    assert.are.same({ 3, 1.5, 2 }, pending[1].args)
    assert.are.equal("move", call.name)
    assert.are.equal(k.id, call.kernel_id)
    assert.is_true(call.pending)
    assert.is_truthy(tostring(call):find("kernelhost.HostCall", 1, true))
    -- A game answers on a later frame: here, after more turns of the loop.
    assert.are.equal(0, f.m:poll(0))
    assert.is_false(st.done)
    assert.is_true(call:return_({ x = 1.5, y = 2 }))
    assert.is_false(call.pending)
    H.wait(f, function() return st.done end, "the cell")
    assert.are.equal("True", st.result.result.data["text/plain"])
    -- One answer per call: a second one is misuse.
    assert.has_error(function() call:return_(1) end)
    assert.has_error(function() call:error("again") end)
  end)

  it("lua_hostcall_invalid_answer", function()
    local _, k = H.create(f)
    local cyclic = {}
    cyclic.self = cyclic
    local co = coroutine.create(function() end)
    local bad = {
      fn = print, co = co, ud = io.stdout, nan = 0 / 0, inf = 1 / 0, cyc = cyclic,
      mixed = { 1, 2, x = 3 }, sparse = { [1] = 1, [3] = 3 }, deep_fn = { a = { { f = print } } },
      badkey = { ["\255"] = 1 },
    }
    assert(k:expose("bad", function(which) return bad[which] end))
    local function why(which)
      return value(k, py({
        "import kernelhost",
        "try:",
        "    kernelhost.host.bad('" .. which .. "')",
        "    r = 'no error'",
        "except kernelhost.HostError as e:",
        "    r = str(e)",
        "r",
      }))
    end
    assert.is_truthy(why("fn"):find("a Lua function", 1, true))
    assert.is_truthy(why("co"):find("a Lua thread", 1, true))
    assert.is_truthy(why("ud"):find("a Lua userdata", 1, true))
    assert.is_truthy(why("nan"):find("nan", 1, true))
    assert.is_truthy(why("inf"):find("inf", 1, true))
    assert.is_truthy(why("cyc"):find("cycle", 1, true))
    assert.is_truthy(why("cyc"):find("/self", 1, true))
    assert.is_truthy(why("mixed"):find("keys", 1, true))
    assert.is_truthy(why("sparse"):find("keys", 1, true))
    assert.is_truthy(why("deep_fn"):find("a Lua function at /a/0/f", 1, true))
    assert.is_truthy(why("badkey"):find("UTF-8", 1, true))
    assert.is_truthy(why("fn"):find("bad", 1, true)) -- names the host function
    -- Through a handle: the kernel hears why, the host gets false, msg, "KH_EINVAL".
    local answers = {}
    assert(k:expose("bad_later", function(call)
      answers[#answers + 1] = pack(call:return_({ f = print }))
    end, { async = true }))
    local err = raised(k, "kernelhost.host.bad_later()")
    assert.are.equal("HostError", err.ename)
    assert.is_truthy(err.evalue:find("a Lua function at /f", 1, true))
    assert.are.equal(false, answers[1][1])
    assert.are.equal("KH_EINVAL", answers[1][3])
    assert.are.equal("2", value(k, "1 + 1")) -- the kernel goes on
  end)

  it("hostcall_interrupt_pending", function()
    local _, k = H.create(f)
    local pending = {}
    assert(k:expose("wait", function(call) pending[#pending + 1] = call end, { async = true }))
    local _, st = H.submit(k, "import kernelhost\nkernelhost.host.wait()")
    H.wait(f, function() return #pending == 1 end, "the call")
    assert(k:interrupt())
    H.wait(f, function() return st.done end, "the cell")
    assert.are.equal("error", st.result.status)
    assert.are.equal("KeyboardInterrupt", st.result.error.ename)
    -- The late answer is dropped quietly: false, msg, "KH_ECANCELED", and no cell sees it.
    local ok, msg, code = pending[1]:return_("too late")
    assert.are.equal(false, ok)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ECANCELED", code)
    assert.is_false(pending[1].pending)
    local _, st2 = H.submit(k, "kernelhost.host.wait()")
    H.wait(f, function() return #pending == 2 end, "the second call")
    assert.is_true(pending[2]:return_("in time"))
    H.wait(f, function() return st2.done end, "the second cell")
    assert.are.equal("'in time'", st2.result.result.data["text/plain"])
  end)

  it("hostcall_destroy_pending", function()
    local id, k = H.create(f)
    local pending = {}
    assert(k:expose("wait", function(call) pending[#pending + 1] = call end, { async = true }))
    local _, st = H.submit(k, "import kernelhost\nkernelhost.host.wait()")
    H.wait(f, function() return #pending == 1 end, "the call")
    assert.is_true(f.m:destroy_kernel(id))
    H.wait(f, function() return st.done end, "the cell's completion")
    assert.is_nil(st.result)
    assert.are.equal("KH_ECANCELED", st.code)
    -- The handle is inert: answering it reports KH_ECANCELED, and nothing waits any more.
    assert.is_false(pending[1].pending)
    local ok, _, code = pending[1]:return_(1)
    assert.are.equal(false, ok)
    assert.are.equal("KH_ECANCELED", code)
    ok, _, code = pending[1]:error("also late")
    assert.are.equal("KH_ECANCELED", code)
    assert.is_nil((f.m:kernel_info(id)))
  end)

  it("lua_hostcall_thread_host", function()
    -- A thread: "host" kernel runs its cells inside kernel:execute, on this thread: its host
    -- functions run there too (kernelhost.h's one exception to the delivery rule), and an async
    -- one must answer before it returns.
    local _, k = H.create(f, { mode = "main_thread", thread = "host" })
    local held
    assert(k:expose("add", function(a, b) return a + b end))
    assert(k:expose("now", function(call, v) assert(call:return_(v)) end, { async = true }))
    assert(k:expose("later", function(call) held = call end, { async = true }))
    assert(k:expose("fails", function() error("no arm", 0) end))
    local busy
    assert(k:expose("blocks", function()
      local r, _, code = k:execute("1")
      busy = r == nil and code
      return 1
    end))
    assert.are.equal("(5, 'x')", value(k, "import kernelhost\nkernelhost.host.add(2, 3), kernelhost.host.now('x')"))
    local err = raised(k, "kernelhost.host.later()")
    assert.are.equal("HostError", err.ename)
    assert.is_truthy(err.evalue:find("without answering", 1, true))
    local ok, _, code = held:return_(1) -- too late: dropped
    assert.are.equal(false, ok)
    assert.are.equal("KH_ECANCELED", code)
    assert.are.equal("no arm", raised(k, "kernelhost.host.fails()").evalue)
    assert.are.equal("1", value(k, "kernelhost.host.blocks()"))
    assert.are.equal("KH_EBUSY", busy) -- no blocking call inside: the loop cannot run there
  end)

  it("hostcall_dropped_handle_answers", function()
    local _, k = H.create(f)
    local called = 0
    assert(k:expose("forget", function(call) called = called + 1 end, { async = true }))
    local _, st = H.submit(k, py({
      "import kernelhost",
      "try:",
      "    kernelhost.host.forget()",
      "except kernelhost.HostError as e:",
      "    r = str(e)",
      "r",
    }))
    -- Nothing refers to the handle once the function returned: a collection answers it.
    H.wait(f, function()
      collectgarbage()
      return st.done
    end, "the collected handle's answer")
    assert.are.equal(1, called)
    assert.are.equal("ok", st.result.status)
    assert.is_truthy(st.result.result.data["text/plain"]:find("never answered", 1, true))
  end)
end)
