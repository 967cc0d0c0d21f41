-- execute_spec.lua: what the execute and input_reply calls refuse that a case file cannot hold:
-- invalid UTF-8 (JSON text is always valid Unicode) and cells of several megabytes, and the
-- manager's limit on them. Running cells is data: tests/cases/execute.json. Names match tests/c and tests/node.
local H = require("helpers")

describe("execute", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

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

  it("input_reply_invalid_utf8", function()
    local _, k = H.create(f)
    local eid, st = H.submit(k, "x = input('? ')\nlen(x), x == 'ok\\x00\\xe9'")
    H.wait(f, function() return H.count(f, "input_request", eid) == 1 end, "input_request")
    local ok, msg, code = k:input_reply("bad\255")
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EENCODING", code) -- in main_thread mode too: it used to be dropped
    ok, msg, code = k:input_reply("\195")
    assert.are.equal("KH_EENCODING", code)
    assert.is_false(st.done)
    assert.is_true(k:input_reply("ok\0\195\169")) -- a NUL and an é, whole
    H.wait(f, function() return st.done end, "the reply")
    assert.are.equal("(4, True)", st.result.result.data["text/plain"])
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
