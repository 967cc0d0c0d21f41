-- grace_spec.lua: interrupt_grace_ms = 0, from Lua (tests/c's grace_zero_* tests). The manager
-- accepts 0, so 0 must work: a time limit, destroying a busy kernel and closing a manager with a
-- busy kernel all complete. A hang here is the failure (the harness's timeout reports it); no
-- test asserts how long anything took.
local H = require("helpers")

-- The cells that keep a kernel busy until it is stopped: a pure-Python loop (which an
-- asynchronous exception stops in main_thread mode), and in worker mode also a sleep.
local function busy_cells()
  local cells = { "while True: pass" }
  if H.mode() == "worker" then cells[#cells + 1] = "import time\ntime.sleep(100)" end
  return cells
end

describe("grace", function()
  local g
  before_each(function() g = H.fixture({ interrupt_grace_ms = 0 }) end)
  after_each(function() H.close(g) end)

  it("grace_zero_time_limit", function()
    for _, cell in ipairs(busy_cells()) do
      local _, k = H.create(g, { max_execution_time = 200 })
      local r, msg, code = k:execute(cell)
      if r ~= nil then
        assert.are.equal("error", r.status)
        assert.are.equal("KeyboardInterrupt", r.error.ename)
      else
        -- a worker may be killed and restarted before the interrupt lands: 0 ms is no grace
        assert.are.equal("worker", H.mode(), msg)
        assert.are.equal("KH_EKERNELDEAD", code)
      end
      assert.are.equal("2", H.exec(k, "1+1").result.data["text/plain"]) -- usable again
    end
  end)

  it("grace_zero_destroy_busy", function()
    for _, cell in ipairs(busy_cells()) do
      local id, k = H.create(g)
      local _, st = H.start(g, k, cell)
      assert.is_true(g.m:destroy_kernel(id))
      assert.are.equal(1, st.calls)
      assert.is_nil(st.result)
      assert.are.equal("KH_ECANCELED", st.code)
    end
    assert.are.same({}, g.m:list_kernels())
  end)

  it("grace_zero_close_busy", function()
    local started = {}
    for _, cell in ipairs(busy_cells()) do
      local _, k = H.create(g)
      local _, st = H.start(g, k, cell)
      started[#started + 1] = st
    end
    assert.is_true(g.m:close())
    for _, st in ipairs(started) do
      assert.are.equal(1, st.calls)
      assert.is_nil(st.result)
      assert.are.equal("KH_ECANCELED", st.code)
    end
  end)
end)
