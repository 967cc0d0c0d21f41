-- close54.lua: the part of lua_spec.lua written in Lua 5.4 syntax (`<close>`), which Lua 5.1
-- and LuaJIT cannot even parse; lua_spec.lua loads it only on 5.4. Returns a function of the
-- spec's fixture (and busted's assert) that checks __close on a manager and on a kernel object.
local kernelhost = require("kernelhost")
local H = require("helpers")
local E = kernelhost.KernelEvents

return function(f, assert) -- busted's assert: a required file sees only the global one
  -- a to-be-closed manager closes at the end of its scope, cancelling its work
  local outer, st
  do
    local m <close> = assert(kernelhost.KernelManager.new())
    local g = { m = m, events = {} }
    m:on_kernel_event(nil, E.ALL, function(e) g.events[#g.events + 1] = e end)
    local id = assert(m:create_kernel(H.opts()))
    st = select(2, H.start(g, m:get_kernel(id), "while True: pass"))
    outer = m
  end
  assert.are.equal("KH_ECLOSED", select(3, outer:list_kernels()))
  assert.are.equal("KH_ECANCELED", st.code)
  -- a kernel object's __close destroys its kernel
  local kid
  do
    local k <close> = select(2, H.create(f))
    kid = k.id
  end
  assert.are.equal("KH_ENOTFOUND", select(3, f.m:get_kernel(kid)))
end
