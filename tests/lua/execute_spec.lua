-- execute_spec.lua: running cells from Lua: results, streams, errors, state, counters, input
-- validation. Names match tests/c (one behaviour, one name, every layer).
local kernelhost = require("kernelhost")
local H = require("helpers")

describe("execute", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("kernel_execute_result", function()
    local id, k = H.create(f)
    local r = H.exec(k, "1 + 1")
    assert.are.equal("ok", r.status)
    assert.are.equal(1, r.execution_count)
    assert.are.equal("2", r.result.data["text/plain"])
    assert.are.equal("table", type(r.result.metadata))
    assert.is_nil(r.error)
    -- outputs: busy, execute_result, idle, in order, each tagged with both ids
    assert.are.equal(3, #r.outputs)
    assert.are.equal("status", r.outputs[1].type)
    assert.are.equal("busy", r.outputs[1].data.execution_state)
    assert.are.equal("execute_result", r.outputs[2].type)
    assert.are.equal(1, r.outputs[2].data.execution_count)
    assert.are.equal("idle", r.outputs[3].data.execution_state)
    for _, o in ipairs(r.outputs) do
      assert.are.equal(id, o.data.kernel_id)
      assert.are.equal(r.execution_id, o.data.execution_id)
    end
    -- the same events went to subscribers, tagged with kernel and execution ids
    local ev = H.events(f, "execute_result", r.execution_id)
    assert.are.equal(1, #ev)
    assert.are.equal(id, ev[1].kernel_id)
    assert.are.equal(id, ev[1].data.kernel_id)
    assert.are.equal(r.execution_id, ev[1].data.execution_id)
  end)

  it("kernel_execute_stream", function()
    local _, k = H.create(f)
    local r = H.exec(k, "for i in range(1000): print(i)")
    assert.are.equal("ok", r.status)
    assert.is_nil(r.result)
    local n = H.count(f, "stream", r.execution_id)
    assert.is_true(n >= 1)
    assert.is_true(n < 100) -- batched, not one event per write
    local expect = {}
    for i = 0, 999 do expect[#expect + 1] = i .. "\n" end
    for _, e in ipairs(H.events(f, "stream", r.execution_id)) do
      assert.are.equal("stdout", e.data.name)
    end
    assert.are.equal(table.concat(expect), H.stream_text(f, r.execution_id))
  end)

  it("kernel_execute_stream_order", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "import sys",
      "for i in range(3):",
      "    print('out', i)",
      "    sys.stderr.write('err %d\\n' % i)",
      "display('shown')",
      "print('end')",
    }, "\n"))
    assert.are.equal("ok", r.status)
    -- merge adjacent writes to the same stream: the order across streams is what matters
    local seq = {}
    for _, o in ipairs(r.outputs) do
      local last = seq[#seq]
      if o.type == "stream" and last and last.name == o.data.name then
        last.text = last.text .. o.data.text
      elseif o.type == "stream" then
        seq[#seq + 1] = { name = o.data.name, text = o.data.text }
      elseif o.type ~= "status" then
        seq[#seq + 1] = { name = o.type, text = o.data.data and o.data.data["text/plain"] }
      end
    end
    local want = {
      { "stdout", "out 0\n" }, { "stderr", "err 0\n" }, { "stdout", "out 1\n" },
      { "stderr", "err 1\n" }, { "stdout", "out 2\n" }, { "stderr", "err 2\n" },
      { "display_data", "'shown'" }, { "stdout", "end\n" },
    }
    assert.are.equal(#want, #seq)
    for i, w in ipairs(want) do
      assert.are.same({ name = w[1], text = w[2] }, seq[i])
    end
  end)

  it("kernel_execute_error", function()
    local _, k = H.create(f)
    local r = H.exec(k, "1/0")
    assert.are.equal("error", r.status)
    assert.is_nil(r.result)
    assert.are.equal("ZeroDivisionError", r.error.ename)
    assert.are.equal("division by zero", r.error.evalue)
    assert.is_true(#r.error.traceback >= 1)
    assert.is_truthy(r.error.traceback[#r.error.traceback]:find("ZeroDivisionError", 1, true))
    local ev = H.events(f, "execute_error", r.execution_id)
    assert.are.equal(1, #ev)
    assert.are.equal("ZeroDivisionError", ev[1].data.ename)
    assert.are.equal("table", type(ev[1].data.traceback))
  end)

  it("kernel_execute_syntax_error", function()
    local _, k = H.create(f)
    local r = H.exec(k, "def f(:\n  pass")
    assert.are.equal("error", r.status)
    assert.are.equal("SyntaxError", r.error.ename)
    assert.are.equal(1, H.count(f, "execute_error", r.execution_id))
    assert.are.equal("ok", H.exec(k, "1").status) -- the kernel goes on
  end)

  it("kernel_execute_system_exit", function()
    local _, k = H.create(f)
    local r = H.exec(k, "raise SystemExit(3)")
    assert.are.equal("error", r.status)
    assert.are.equal("SystemExit", r.error.ename)
    r = H.exec(k, "exit()")
    assert.are.equal("error", r.status)
    assert.are.equal("SystemExit", r.error.ename)
    assert.are.equal("2", H.exec(k, "1 + 1").result.data["text/plain"])
  end)

  it("kernel_state_persists", function()
    local _, k = H.create(f)
    assert.are.equal("ok", H.exec(k, "x = 41\ndef inc(v):\n    return v + 1").status)
    assert.are.equal("42", H.exec(k, "inc(x)").result.data["text/plain"])
    assert.are.equal("42", H.exec(k, "_").result.data["text/plain"])
  end)

  it("kernel_result_suppressed", function()
    local _, k = H.create(f)
    for _, code in ipairs({ "1 + 1;", "1 + 1;  # comment", "x = 1", "None", "print('p')" }) do
      local r = H.exec(k, code)
      assert.are.equal("ok", r.status)
      assert.is_nil(r.result, code)
      assert.are.equal(0, H.count(f, "execute_result", r.execution_id), code)
    end
  end)

  it("kernel_namespaces_isolated", function()
    local _, a = H.create(f)
    local _, b = H.create(f)
    assert.are.equal("ok", H.exec(a, "secret = 1").status)
    local r = H.exec(b, "secret")
    assert.are.equal("error", r.status)
    assert.are.equal("NameError", r.error.ename)
    assert.are.equal("1", H.exec(a, "secret").result.data["text/plain"])
  end)

  it("kernel_execution_count", function()
    local _, k = H.create(f)
    assert.are.equal(1, H.exec(k, "1").execution_count)
    assert.are.equal(2, H.exec(k, "2").execution_count)
    local r = H.exec(k, "3", { silent = true })
    assert.is_nil(r.result) -- silent: no result, counter unchanged
    assert.are.equal(0, H.count(f, "execute_result", r.execution_id))
    assert.are.equal(2, r.execution_count)
    r = H.exec(k, "4", { store_history = false })
    assert.are.equal(2, r.execution_count)
    assert.are.equal("4", r.result.data["text/plain"])
    assert.are.equal(3, H.exec(k, "5").execution_count)
    local list = f.m:list_kernels()
    assert.are.equal(3, list[1].execution_count)
  end)

  it("kernel_top_level_await", function()
    local _, k = H.create(f)
    local r = H.exec(k, "import asyncio\nawait asyncio.sleep(0)\n6 * 7")
    assert.are.equal("ok", r.status)
    assert.are.equal("42", r.result.data["text/plain"])
    r = H.exec(k, "async def f():\n    return 'a'\nawait f()")
    assert.are.equal("'a'", r.result.data["text/plain"])
  end)

  it("kernel_numpy_import", function()
    -- The module is loaded RTLD_LOCAL; numpy's C extension needs libpython's symbols global.
    local _, k = H.create(f)
    local r = H.exec(k, "import numpy as np\nint(np.arange(10).sum())")
    assert.are.equal("ok", r.status, r.error and r.error.evalue)
    assert.are.equal("45", r.result.data["text/plain"])
  end)

  it("stream_thread_output", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "import threading",
      "t = threading.Thread(target=lambda: print('from thread'))",
      "t.start(); t.join()",
    }, "\n"))
    assert.are.equal("ok", r.status)
    assert.are.equal("from thread\n", H.stream_text(f, r.execution_id, "stdout"))
  end)

  it("kernel_invalid_utf8", function()
    local _, k = H.create(f)
    local calls = 0
    local r, msg, code = k:execute("x = '\255\254'")
    assert.is_nil(r)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EENCODING", code)
    r, msg, code = k:submit("'\192'", function() calls = calls + 1 end)
    assert.is_nil(r)
    assert.are.equal("KH_EENCODING", code)
    assert.are.equal("ok", H.exec(k, "'é'").status) -- valid UTF-8 passes; the kernel goes on
    assert.are.equal(0, calls) -- a call that failed never runs its callback
  end)

  it("kernel_nul_byte", function()
    local _, k = H.create(f)
    local r, msg, code = k:execute("a = 1\0b = 2")
    assert.is_nil(r)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EENCODING", code)
  end)

  it("kernel_huge_cell", function()
    local _, k = H.create(f)
    local r, msg, code = k:execute("x = 1\n" .. ("#" .. ("x"):rep(1023) .. "\n"):rep(10 * 1024))
    assert.is_nil(r)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ETOOBIG", code)
    assert.are.equal("ok", H.exec(k, "1").status)
    -- the limit is the manager's option
    local g = H.fixture({ max_code_bytes = 16 })
    local _, k2 = H.create(g)
    assert.are.equal("ok", H.exec(k2, "x = 123456789012").status) -- 16 bytes
    r, msg, code = k2:execute("x = 1234567890123")
    assert.is_nil(r)
    assert.are.equal("KH_ETOOBIG", code)
    H.close(g)
  end)
end)
