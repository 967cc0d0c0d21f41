-- kernelhost/driver.lua: drives the module's private libuv loop from Neovim's (vim.loop),
-- without polling. A poll handle watches manager:fd(), the module loop's backend descriptor,
-- which is readable whenever that loop has work (an event from a kernel, a worker's pipe); a
-- one-shot timer is armed only when manager:timeout() says the module has a timer due (-1, no
-- timer: none is armed). Either wakes a drain, run on Neovim's main loop (vim.schedule), which
-- calls manager:poll(0) and then the owner's on_drain, where the events the module delivered
-- are rendered. libuv callbacks run in Neovim's "fast" context, where buffers cannot be
-- changed: that is why the drain is scheduled instead of run in the callback.
local uv = vim.loop

local D = {}
D.__index = D

-- manager: a kernelhost.Manager; on_drain(): called after every manager:poll(0).
function D.new(manager, on_drain)
  local self = setmetatable({
    manager = manager,
    on_drain = on_drain,
    poll = assert(uv.new_poll(manager:fd())),
    timer = assert(uv.new_timer()),
    scheduled = false, -- a drain is queued on the main loop; the handles are stopped meanwhile
    closed = false,
    drains = 0, -- how many drains ran (the tests read it)
  }, D)
  self.wake_cb = function() self:wake() end
  self:arm()
  return self
end

-- Queues one drain; from a libuv callback or from anywhere else. The poll handle is stopped
-- until the drain ran: the descriptor stays readable until then (epoll is level-triggered) and
-- would otherwise call back on every turn of Neovim's loop.
function D:wake()
  if self.scheduled or self.closed then return end
  self.scheduled = true
  self.poll:stop()
  self.timer:stop()
  vim.schedule(function() self:drain() end)
end

function D:drain()
  self.scheduled = false
  if self.closed then return end
  self.drains = self.drains + 1
  self.manager:poll(0)
  local ok, err = pcall(self.on_drain)
  self:arm()
  if not ok then vim.notify("kernelhost: " .. tostring(err), vim.log.levels.ERROR) end
end

-- Watches the descriptor again and arms the timer the module asks for, if any. Called after
-- each drain and after every call the plugin makes into the module (a call may start a timer
-- in the module's loop: a time limit, an interrupt's grace period).
function D:arm()
  if self.closed or self.scheduled then return end
  self.poll:start("r", self.wake_cb)
  local ms = self.manager:timeout()
  if type(ms) == "number" and ms >= 0 then
    self.timer:start(ms, 0, self.wake_cb)
  else
    self.timer:stop()
  end
end

-- True when the timer is armed (the tests check that an idle plugin arms none).
function D:timer_active()
  return self.timer:is_active()
end

-- Stops watching; call before the manager closes (its descriptor goes with it).
function D:close()
  if self.closed then return end
  self.closed = true
  self.poll:stop()
  self.timer:stop()
  self.poll:close()
  self.timer:close()
end

return D
