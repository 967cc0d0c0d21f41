-- interact_spec.lua: what a case file cannot hold about editor requests: historyFile (a path of
-- the test's own). The rest is data: tests/cases/interact.json. An interrupt while a request is
-- in flight and no cell runs (interact_interrupt_idle, C and Node) cannot be made from Lua, whose
-- requests block and which gets no callback from an idle kernel. Names match tests/c and
-- tests/node.
local kernelhost = require("kernelhost")
local H = require("helpers")

describe("interact", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("history_file_output", function()
    local file = os.tmpname()
    local id, first = H.create(f, { history_file = file })
    assert.are.equal("ok", H.exec(first, "x = 20").status)
    assert.are.equal("ok", H.exec(first, "x * 2 + 2").status)
    assert(f.m:destroy_kernel(id))
    local _, k = H.create(f, { history_file = file })
    assert.are.equal("ok", H.exec(k, "'next'").status)
    local h = assert(k:history({ hist_access_type = "tail", n = 10, output = true }))
    os.remove(file)
    assert.are.same({
      { 1, 1, { "x = 20", kernelhost.null } },
      { 1, 2, { "x * 2 + 2", "42" } },
      { 2, 1, { "'next'", "'next'" } },
    }, h.history)
  end)
end)
