-- display_spec.lua: rich output from Lua: MIME bundles, display ids, clear_output, contained
-- formatter errors, IPython.display and matplotlib figures.
local H = require("helpers")

describe("display", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("display_data_mime", function()
    local id, k = H.create(f)
    local r = H.exec(k, table.concat({
      "class Rich:",
      "    def _repr_html_(self): return '<b>rich</b>'",
      "    def _repr_markdown_(self): return '**rich**'",
      "    def __repr__(self): return 'Rich()'",
      "display(Rich())",
      "Rich()",
    }, "\n"))
    assert.are.equal("ok", r.status)
    local ev = H.events(f, "display_data", r.execution_id)
    assert.are.equal(1, #ev)
    local d = ev[1].data
    assert.are.equal("<b>rich</b>", d.data["text/html"])
    assert.are.equal("**rich**", d.data["text/markdown"])
    assert.are.equal("Rich()", d.data["text/plain"])
    assert.are.equal("table", type(d.metadata))
    assert.are.equal(id, d.kernel_id)
    assert.are.equal("<b>rich</b>", r.result.data["text/html"])
    assert.are.equal("Rich()", r.result.data["text/plain"])
  end)

  it("display_update_and_clear", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "h = display('first', display_id='d1')",
      "update_display('second', display_id='d1')",
      "h.update('third')",
      "clear_output(wait=True)",
    }, "\n"))
    assert.are.equal("ok", r.status)
    local shown = H.events(f, "display_data", r.execution_id)
    assert.are.equal(1, #shown)
    assert.are.equal("d1", shown[1].data.transient.display_id)
    assert.are.equal("'first'", shown[1].data.data["text/plain"])
    local updates = H.events(f, "update_display_data", r.execution_id)
    assert.are.equal(2, #updates)
    assert.are.equal("d1", updates[1].data.transient.display_id)
    assert.are.equal("'second'", updates[1].data.data["text/plain"])
    assert.are.equal("'third'", updates[2].data.data["text/plain"])
    local clears = H.events(f, "clear_output", r.execution_id)
    assert.are.equal(1, #clears)
    assert.is_true(clears[1].data.wait)
  end)

  it("display_formatter_error_contained", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "class Bad:",
      "    def _repr_html_(self): raise RuntimeError('formatter broke')",
      "    def __repr__(self): return 'Bad()'",
      "display(Bad())",
      "Bad()",
    }, "\n"))
    assert.are.equal("ok", r.status) -- the cell does not fail
    local ev = H.events(f, "display_data", r.execution_id)
    assert.are.equal(1, #ev)
    assert.are.equal("Bad()", ev[1].data.data["text/plain"])
    assert.is_nil(ev[1].data.data["text/html"])
    assert.are.equal("Bad()", r.result.data["text/plain"])
    assert.is_truthy(H.stream_text(f, r.execution_id, "stderr"):find("formatter broke", 1, true))
  end)

  it("display_ipython", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "from IPython.display import display, HTML, Markdown",
      "display(HTML('<i>x</i>'))",
      "display(Markdown('*y*'))",
    }, "\n"))
    assert.are.equal("ok", r.status, r.error and r.error.evalue)
    local ev = H.events(f, "display_data", r.execution_id)
    assert.are.equal(2, #ev)
    assert.are.equal("<i>x</i>", ev[1].data.data["text/html"])
    assert.are.equal("*y*", ev[2].data.data["text/markdown"])
    assert.are.equal("string", type(ev[1].data.data["text/plain"]))
  end)

  it("matplotlib_png", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "import matplotlib.pyplot as plt",
      "plt.plot([1, 2, 3], [1, 4, 9])",
      "plt.show()",
    }, "\n"))
    assert.are.equal("ok", r.status, r.error and r.error.evalue)
    local ev = H.events(f, "display_data", r.execution_id)
    assert.are.equal(1, #ev)
    local png = ev[1].data.data["image/png"]
    assert.are.equal("string", type(png))
    assert.are.equal("iVBORw0KGgo", png:sub(1, 11)) -- base64 of the PNG signature
    assert.is_truthy(ev[1].data.data["text/plain"]:find("Figure", 1, true))
    -- a figure left open at the end of a cell is shown too, once
    r = H.exec(k, "plt.figure(); plt.plot([0, 1])")
    assert.are.equal(1, H.count(f, "display_data", r.execution_id))
  end)
end)
