-- cases_spec.lua: the busted harness of tests/cases/<concept>.json. The format, the matching
-- rules and the checks made for every request are written once in tests/cases/README.md;
-- tests/c/cases.c and tests/node/cases.test.js implement the same rules. Each case is one
-- it() named after it, so a behaviour has the same name here as in C and Node.
local kernelhost = require("kernelhost")
local json = require("dkjson") -- a dependency of busted itself
local lfs = require("lfs")     -- likewise
local H = require("helpers")

local CASES_DIR = "../cases" -- busted runs in tests/lua (see bindings-lua/CMakeLists.txt)
local NULL = kernelhost.null

-- --- reading the cases ----------------------------------------------------------------------

local function load_files()
  local names = {}
  for f in lfs.dir(CASES_DIR) do
    if f:match("%.json$") then names[#names + 1] = f end
  end
  table.sort(names)
  local files = {}
  for _, f in ipairs(names) do
    local fh = assert(io.open(CASES_DIR .. "/" .. f, "rb"))
    local text = fh:read("a")
    fh:close()
    -- JSON null becomes kernelhost.null, as in every value the binding hands out.
    local doc, _, err = json.decode(text, 1, NULL)
    assert(doc, f .. ": " .. tostring(err))
    files[#files + 1] = doc
  end
  return files
end

-- --- matchers (tests/cases/README.md, "Matchers") -------------------------------------------

-- Whether a table decoded by dkjson was a JSON object or array (it says so in a metatable).
local function json_kind(t)
  local mt = getmetatable(t)
  return mt and mt.__jsontype
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function type_name(v)
  local t = type(v)
  if v == NULL then return "null" end
  if t == "table" then
    if next(v) == nil then return "empty" end -- an empty table is both object and array
    return is_array(v) and "array" or "object"
  end
  return t -- string, number, boolean
end

local function show(v)
  if v == nil then return "(missing)" end
  if v == NULL then return "null" end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v, { exception = function() return "?" end })
    return ok and s:sub(1, 400) or "(table)"
  end
  return (tostring(v)):sub(1, 400)
end

local function deep_equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local match

local function is_ops(exp)
  if type(exp) ~= "table" or json_kind(exp) ~= "object" then return false end
  local ops, plain = 0, 0
  for k in pairs(exp) do
    if type(k) == "string" and k:sub(1, 1) == "$" then ops = ops + 1 else plain = plain + 1 end
  end
  assert(ops == 0 or plain == 0, "a matcher mixes $ operators and keys")
  return ops > 0
end

local function fail(path, what, exp, act)
  return false, ("%s: %s: expected %s, got %s"):format(path ~= "" and path or "(value)", what,
                                                       show(exp), show(act))
end

local ops = {}

ops["$absent"] = function(arg, act, path)
  if (arg == true) == (act == nil) then return true end
  return fail(path, "$absent", arg, act)
end

ops["$eq"] = function(arg, act, path)
  if deep_equal(arg, act) then return true end
  return fail(path, "$eq", arg, act)
end

ops["$type"] = function(arg, act, path)
  local t = type_name(act)
  if t == arg or (t == "empty" and (arg == "object" or arg == "array")) then return true end
  if arg == "integer" and H.is_integer(act) then return true end
  return fail(path, "$type", arg, act)
end

ops["$contains"] = function(arg, act, path)
  if type(act) == "string" and act:find(arg, 1, true) then return true end
  return fail(path, "$contains", arg, act)
end

ops["$not_contains"] = function(arg, act, path)
  if type(act) == "string" and not act:find(arg, 1, true) then return true end
  return fail(path, "$not_contains", arg, act)
end

ops["$prefix"] = function(arg, act, path)
  if type(act) == "string" and act:sub(1, #arg) == arg then return true end
  return fail(path, "$prefix", arg, act)
end

-- Bytes are kernelhost.bytes values here: the harness exposes its functions with
-- {bytes = true}, so that bytes and str arguments stay apart (tests/cases/README.md).
local BYTES_MT = getmetatable(kernelhost.bytes(""))

local function is_bytes(v) return type(v) == "userdata" and getmetatable(v) == BYTES_MT end

local function from_hex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

-- A binary value is a Lua string of its bytes (the binding's form for kh_buffer_t), or a
-- kernelhost.bytes value where the harness asked for those (host functions exposed with
-- {bytes = true}); a string argument is the hex (the host-function cases' {"$bytes": HEX}).
ops["$bytes"] = function(arg, act, path)
  if type(arg) == "string" then arg = { hex = arg } end
  if is_bytes(act) then act = tostring(act) end
  if type(act) == "string" then
    local hex = act:gsub(".", function(c) return string.format("%02x", c:byte()) end)
    if (arg.hex == nil or hex == arg.hex)
        and (arg.prefix_hex == nil or hex:sub(1, #arg.prefix_hex) == arg.prefix_hex)
        and (arg.len == nil or #act == arg.len) then
      return true
    end
  end
  return fail(path, "$bytes", arg, act)
end

ops["$min"] = function(arg, act, path)
  if type(act) == "number" and act >= arg then return true end
  return fail(path, "$min", arg, act)
end

ops["$max"] = function(arg, act, path)
  if type(act) == "number" and act <= arg then return true end
  return fail(path, "$max", arg, act)
end

local function array_of(act)
  return type(act) == "table" and (next(act) == nil or is_array(act))
end

ops["$len"] = function(arg, act, path)
  if not array_of(act) then return fail(path, "$len of an array", arg, act) end
  return match(arg, #act, path .. ".length")
end

ops["$each"] = function(arg, act, path)
  if not array_of(act) then return fail(path, "$each", arg, act) end
  for i, v in ipairs(act) do
    local ok, why = match(arg, v, ("%s[%d]"):format(path, i - 1))
    if not ok then return false, why end
  end
  return true
end

ops["$some"] = function(arg, act, path)
  if not array_of(act) then return fail(path, "$some", arg, act) end
  for i, v in ipairs(act) do
    if match(arg, v, ("%s[%d]"):format(path, i - 1)) then return true end
  end
  return fail(path, "$some", arg, act)
end

ops["$all"] = function(arg, act, path)
  for _, m in ipairs(arg) do
    local ok, why = match(m, act, path)
    if not ok then return false, why end
  end
  return true
end

ops["$item"] = function(arg, act, path)
  if not array_of(act) then return fail(path, "$item", arg, act) end
  for k, m in pairs(arg) do
    local idx = tonumber(k)
    if idx < 0 then idx = idx + #act end
    local sub = ("%s[%s]"):format(path, k)
    if idx < 0 or idx >= #act then return fail(sub, "$item", m, nil) end
    local ok, why = match(m, act[idx + 1], sub)
    if not ok then return false, why end
  end
  return true
end

-- Returns true when act (nil: missing) matches exp; otherwise false and why.
function match(exp, act, path)
  path = path or ""
  if is_ops(exp) then
    for op, arg in pairs(exp) do
      local f = ops[op]
      assert(f, "unknown matcher operator " .. op)
      if op ~= "$absent" and act == nil then return fail(path, op, arg, act) end
      local ok, why = f(arg, act, path)
      if not ok then return false, why end
    end
    return true
  end
  if act == nil then return fail(path, "missing", exp, act) end
  if exp == NULL then
    if act == NULL then return true end
    return fail(path, "not null", exp, act)
  end
  if type(exp) == "table" and json_kind(exp) == "object" then
    if type(act) ~= "table" or (next(act) ~= nil and is_array(act) and next(exp) ~= nil) then
      return fail(path, "not an object", exp, act)
    end
    for k, v in pairs(exp) do
      local ok, why = match(v, act[k], path .. (path ~= "" and "." or "") .. k)
      if not ok then return false, why end
    end
    return true
  end
  if type(exp) == "table" then -- an array
    if not array_of(act) or #act ~= #exp then
      return fail(path, "not an array of that length", exp, act)
    end
    for i, v in ipairs(exp) do
      local ok, why = match(v, act[i], ("%s[%d]"):format(path, i - 1))
      if not ok then return false, why end
    end
    return true
  end
  if type(exp) == type(act) and exp == act then return true end
  return fail(path, "not equal", exp, act)
end

-- --- running a case -------------------------------------------------------------------------

local function code_of(c)
  if type(c) == "string" then return c end
  return table.concat(c, "\n")
end

-- The execute options, as the Lua binding spells them (the same snake_case keys).
local function exec_options(o)
  if o == nil then return nil end
  local out = {}
  for k, v in pairs(o) do out[k] = v end
  return out
end

local Run = {}
Run.__index = Run

local function new_run(case, mode)
  local r = setmetatable({ case = case, mode = mode, step = 0, kernels = {}, reqs = {},
                           completed = 0, in_call = false, ids_seen = {}, fns = {}, later = {},
                           held = {}, problems = {}, comms = {}, comm_list = {} }, Run)
  local mopts = case.manager
  r.f = H.fixture(mopts and exec_options(mopts) or nil)
  -- Inputs are answered from inside the event listener, as a Lua host does.
  r.f.m:on_kernel_event(nil, kernelhost.KernelEvents.INPUT_REQUEST, function(d)
    for _, q in ipairs(r.reqs) do
      if q.id == d.execution_id and q.spec.inputs then
        q.answered = q.answered + 1
        local v = q.spec.inputs[q.answered]
        assert(v ~= nil, "more input requests than inputs")
        assert(q.kernel:input_reply(v))
      end
    end
  end)
  return r
end

function Run:fail(fmt, ...)
  error(("case %s, step %d (%s mode): " .. fmt):format(self.case.name, self.step, self.mode, ...),
        0)
end

function Run:expect(exp, act, what)
  local ok, why = match(exp, act, "")
  if not ok then self:fail("%s: %s", what, why) end
end

function Run:kernel(name)
  local k = self.kernels[name or "k"]
  if not k then self:fail("no kernel named %s in this case", tostring(name)) end
  return k
end

function Run:kernel_options(o)
  local out = {}
  for k, v in pairs(o or {}) do out[k] = v end
  if out.mode == nil then out.mode = self.mode end
  return out
end

-- Checks a call's outcome against {code, message} (no code: it must succeed).
function Run:outcome(exp, ok, msg, code, what)
  exp = exp or {}
  if exp.code == nil and not ok then self:fail("%s failed: %s: %s", what, code, msg) end
  if exp.code ~= nil and (ok or code ~= exp.code) then
    self:fail("%s: expected %s, got %s", what, exp.code, ok and "success" or tostring(code))
  end
  if exp.message ~= nil then self:expect(exp.message, msg or "", "message") end
end

function Run:create(name, opts, exp)
  if self.kernels[name] then self:fail("kernel %s created twice", name) end
  local id, msg, code = self.f.m:create_kernel(self:kernel_options(opts))
  self:outcome(exp, id ~= nil, msg, code, "create")
  if id then self.kernels[name] = assert(self.f.m:get_kernel(id)) end
  -- Its cells run inside the call that runs them, and its host functions with them.
  self.host_thread = self.host_thread or {}
  self.host_thread[name] = type(opts) == "table" and opts.thread == "host"
end

function Run:submit(spec)
  local k = self:kernel(spec.kernel)
  local q = { spec = spec, kernel = k, calls = 0, answered = 0 }
  self.reqs[#self.reqs + 1] = q
  self.in_call = true
  local id, msg, code = k:submit(code_of(spec.execute), exec_options(spec.options),
                                 function(reply, m, c)
    if self.in_call then self:fail("a completion ran inside the call that caused it") end
    q.calls = q.calls + 1
    if q.calls > 1 then self:fail("request %s completed twice", q.id) end
    self.completed = self.completed + 1
    q.order, q.reply, q.msg, q.code = self.completed, reply, m, c
  end)
  self.in_call = false
  if id == nil then
    q.refused, q.msg, q.code = true, msg, code
    return q
  end
  if id == "" then self:fail("an execution id is empty") end
  if self.ids_seen[id] then self:fail("execution id %s given twice", id) end
  self.ids_seen[id] = true
  q.id = id
  if q.calls ~= 0 then self:fail("a completion ran inside kernel:submit") end
  return q
end

-- The comm object a COMM step uses: kernel:open_comm() for "open", kernel:comm(id) otherwise.
-- Each handle the harness holds records what its callbacks got, to check against the events.
function Run:comm_handle(k, c)
  local key = k.id .. "\0" .. c.comm_id
  local h = self.comms[key]
  if h == nil or h.comm ~= c then
    -- A new object for the id (the old one's comm was closed or forgotten) takes over its events.
    if h ~= nil and h.upto == nil then h.upto = #self.f.events end
    h = { comm = c, kernel = k, from = #self.f.events + 1, got = {} }
    self.comms[key] = h
    self.comm_list[#self.comm_list + 1] = h
    c:on_msg(function(d) h.got[#h.got + 1] = { type = "comm_msg", data = d } end)
    c:on_close(function(d) h.got[#h.got + 1] = { type = "comm_close", data = d } end)
  end
  return h
end

-- A COMM step (tests/cases/README.md): the host's side of a comm message, the binding's way. It
-- completes with its idle status; its id is learnt from the first busy status after the call.
function Run:submit_comm(spec)
  local k = self:kernel(spec.kernel)
  local q = { spec = spec, kernel = k, calls = 0, answered = 0, comm = true,
              from = #self.f.events + 1 }
  self.reqs[#self.reqs + 1] = q
  local opts = { metadata = spec.metadata }
  if spec.buffers then -- hex strings: the buffers are Lua strings of those bytes
    opts.buffers = {}
    for i, h in ipairs(spec.buffers) do
      opts.buffers[i] = h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)
    end
  end
  local ok, msg, code
  self.in_call = true
  if spec.comm == "open" then
    opts.comm_id = spec.comm_id
    ok, msg, code = k:open_comm(spec.target_name, spec.data, opts)
    if ok then self:comm_handle(k, ok) end
  else
    local c = k:comm(spec.comm_id)
    self:comm_handle(k, c)
    if spec.comm == "msg" then
      ok, msg, code = c:send(spec.data, opts)
    elseif spec.comm == "close" then
      ok, msg, code = c:close(spec.data, opts)
      -- The host's own close: the handle hears nothing after it.
      if ok then self:comm_handle(k, c).upto = #self.f.events end
    else
      self.in_call = false
      self:fail("unknown comm verb %s", tostring(spec.comm))
    end
  end
  self.in_call = false
  if not ok then q.refused, q.msg, q.code = true, msg, code end
  return q
end

-- A comm message's id is its kernel's first busy status after the call that belongs to no
-- other request; it has completed once its idle status came.
function Run:comm_progress(q)
  if not q.comm or q.refused or q.calls > 0 then return end
  if q.id == nil then
    local taken = {}
    for _, p in ipairs(self.reqs) do if p.id then taken[p.id] = true end end
    for n = q.from, #self.f.events do
      local e = self.f.events[n]
      if e.type == "status" and e.kernel_id == q.kernel.id and e.execution_id ~= "" and
         e.data.execution_state == "busy" and not taken[e.execution_id] then
        q.id = e.execution_id
        break
      end
    end
    if q.id == nil then return end
    if self.ids_seen[q.id] then self:fail("execution id %s given twice", q.id) end
    self.ids_seen[q.id] = true
  end
  for _, e in ipairs(H.statuses(self.f, "idle", q.id)) do
    if e.kernel_id == q.kernel.id then
      q.calls = 1
      self.completed = self.completed + 1
      q.order = self.completed
      return
    end
  end
end

-- Every comm_msg / comm_close event of a comm the harness holds a handle of reached the
-- handle's callbacks, once each, in order, after the handle was made.
function Run:check_comms()
  for _, h in ipairs(self.comm_list) do
    local want = {}
    for n = h.from, h.upto or #self.f.events do
      local e = self.f.events[n]
      local mine = e.kernel_id == h.kernel.id
      if mine and (e.type == "comm_msg" or e.type == "comm_close") and
         e.data.comm_id == h.comm.comm_id then
        want[#want + 1] = { type = e.type, data = e.data }
        if e.type == "comm_close" then break end -- a closed comm hears nothing more
      end
      -- A restart or a death ends the kernel's comms.
      if mine and e.type == "status" and (e.data.execution_state == "restarting" or
                                          e.data.execution_state == "dead") then break end
    end
    if #want ~= #h.got then
      self:fail("comm %s: %d events, %d callbacks", h.comm.comm_id, #want, #h.got)
    end
    for i, w in ipairs(want) do
      if w.type ~= h.got[i].type or not deep_equal(w.data, h.got[i].data) then
        self:fail("comm %s: callback %d is not the event %d", h.comm.comm_id, i, i)
      end
    end
  end
end

function Run:stdout_of(q)
  return H.stream_text(self.f, q.id, "stdout")
end

function Run:due(q, when)
  if q.id == nil then return false end -- a comm message whose busy has not come yet
  if when == "busy" then
    for _, e in ipairs(H.events(self.f, "status", q.id)) do
      if e.data.execution_state == "busy" then return true end
    end
    return false
  end
  if type(when) == "table" and when.stdout then
    return self:stdout_of(q):find(when.stdout, 1, true) ~= nil
  end
  self:fail("unknown \"when\" in during")
end

-- The `during` call, made from the loop (outside any callback), where Lua's calls block.
function Run:during_do(q, what)
  local ok, msg, code
  if what == "interrupt" then
    ok, msg, code = q.kernel:interrupt()
  elseif what == "restart" then
    ok, msg, code = q.kernel:restart()
  elseif what == "destroy" then
    ok, msg, code = self.f.m:destroy_kernel(q.kernel.id)
  else
    self:fail("unknown \"do\" in during: %s", tostring(what))
  end
  if not ok then self:fail("during %s: %s: %s", what, tostring(code), tostring(msg)) end
end

function Run:wait_requests(first, during)
  local due = during == nil
  self:wait(function()
    local pending = false
    for i = first, #self.reqs do
      local q = self.reqs[i]
      self:comm_progress(q)
      if not q.refused and q.calls == 0 then pending = true end
    end
    local q1 = self.reqs[first]
    if not due and not q1.refused and self:due(q1, during.when) then
      due = true
      self:during_do(q1, during["do"])
    end
    if not due and not pending then
      self:fail("the request completed before its \"during\" was due")
    end
    return not pending
  end, "the requests of the step")
end

-- The request's events as {type, data} (merged: adjacent streams of one name concatenated).
function Run:request_events(id, merge)
  local out = {}
  for _, e in ipairs(H.events(self.f, "*", id)) do
    local last = out[#out]
    if merge and last and e.type == "stream" and last.type == "stream" and
       last.data.name == e.data.name then
      local d = {}
      for k, v in pairs(last.data) do d[k] = v end
      d.text = last.data.text .. e.data.text
      last.data = d
    else
      out[#out + 1] = { type = e.type, data = e.data }
    end
  end
  return out
end

function Run:check_request(q)
  local exp = q.spec.expect or {}
  if exp.refused then
    if not q.refused or q.code ~= exp.refused then
      self:fail("expected the call to be refused with %s, got %s", exp.refused,
                q.refused and tostring(q.code) or "success")
    end
  elseif q.refused then
    self:fail("the call was refused: %s: %s", tostring(q.code), tostring(q.msg))
  elseif exp.failed then
    if q.reply ~= nil or q.code ~= exp.failed then
      self:fail("expected the request to fail with %s, got %s", exp.failed,
                q.reply and "a reply" or tostring(q.code))
    end
  elseif q.reply == nil and not q.comm then
    self:fail("the request failed: %s: %s", tostring(q.code), tostring(q.msg))
  end
  if exp.message ~= nil then self:expect(exp.message, q.msg or "", "message") end
  if q.refused then return end
  -- Every event carries the kernel's id (and, as this binding does, both ids in its data); with
  -- a reply, the events are its outputs.
  local events = H.events(self.f, "*", q.id)
  for _, e in ipairs(events) do
    if e.kernel_id ~= q.kernel.id or e.data.kernel_id ~= q.kernel.id or
       e.data.execution_id ~= q.id then
      self:fail("an event of %s is not tagged with its kernel and request", q.id)
    end
  end
  if q.reply then
    local outs = q.reply.outputs
    if #outs ~= #events then self:fail("%d events, %d outputs", #events, #outs) end
    for i, o in ipairs(outs) do
      if o.type ~= events[i].type or not deep_equal(o.data, events[i].data) then
        self:fail("output %d is not the subscriber's event %d", i, i)
      end
      if o.data.kernel_id ~= q.kernel.id or o.data.execution_id ~= q.id then
        self:fail("output %d is not tagged with its kernel and request", i)
      end
    end
  end
  for k, v in pairs(exp) do
    local what = "expect." .. k
    if k == "status" or k == "execution_count" or k == "result" or k == "error" then
      if q.reply == nil then self:fail("%s: the request got no reply", what) end
      self:expect(v, q.reply[k], what)
    elseif k == "events" then
      self:expect(v, self:request_events(q.id, true), what)
    elseif k == "streams" then
      for name, m in pairs(v) do
        self:expect(m, H.stream_text(self.f, q.id, name), what .. "." .. name)
      end
    elseif k == "counts" then
      for type_, m in pairs(v) do
        self:expect(m, H.count(self.f, type_, q.id), what .. "." .. type_)
      end
    elseif k ~= "refused" and k ~= "failed" and k ~= "message" then
      self:fail("unknown expect key %s", k)
    end
  end
end

-- Requests of one batch that ran complete in order; no two requests' events interleave.
function Run:check_batch_order(first)
  local last_prev = 0
  for i = first, #self.reqs do
    local q = self.reqs[i]
    if not q.refused then
      for j = first, i - 1 do
        local p = self.reqs[j]
        if q.reply and p.reply and p.order > q.order then
          self:fail("request %d of the batch completed before request %d", i - first + 1,
                    j - first + 1)
        end
      end
      local lo, hi
      for n, e in ipairs(self.f.events) do
        if e.execution_id == q.id then
          lo = lo or n
          hi = n
        end
      end
      if lo and lo < last_prev then
        self:fail("events of request %d came before the end of the previous one", i - first + 1)
      end
      if hi then last_prev = hi end
    end
  end
end

function Run:kernel_call(verb, step)
  local name = step[verb]
  if verb == "input_reply" then name = step.kernel end
  local k = self:kernel(name)
  local ok, msg, code
  if verb == "restart" then
    ok, msg, code = k:restart()
  elseif verb == "destroy" then
    ok, msg, code = self.f.m:destroy_kernel(k.id)
  elseif verb == "interrupt" then
    ok, msg, code = k:interrupt()
  else
    ok, msg, code = k:input_reply(step[verb])
  end
  self:outcome(step.expect, ok, msg, code, verb)
end

function Run:kernel_events(name, exp)
  local id = self:kernel(name).id
  local function own()
    local out = {}
    for _, e in ipairs(self.f.events) do
      if e.kernel_id == id and e.execution_id == "" then
        out[#out + 1] = { type = e.type, data = e.data }
      end
    end
    return out
  end
  self:wait(function() return #own() >= #exp end, "the kernel's events")
  self:expect(exp, own(), "kernel_events")
end

-- An editor request ("request" step): blocking, like every Lua call that waits for the kernel.
function Run:editor_call(verb, step, k)
  local opts = step.timeout and { timeout = step.timeout } or nil
  local code = step.code ~= nil and code_of(step.code) or nil
  if verb == "complete" then
    return k:complete(code, step.cursor_pos, opts)
  elseif verb == "inspect" then
    return k:inspect(code, step.cursor_pos, step.detail_level or 0, opts)
  elseif verb == "is_complete" then
    return k:is_complete(code, opts)
  elseif verb == "history" then
    return k:history(step.history)
  elseif verb == "kernel_info" then
    return k:kernel_info(opts)
  end
  self:fail("unknown request \"%s\"", tostring(verb))
end

function Run:request(step)
  local k = self:kernel(step.kernel)
  local exp = step.expect or {}
  if step.kernel_id ~= nil then
    -- A kernel object whose kernel is gone: Lua cannot name a kernel that never existed.
    local id = assert(self.f.m:create_kernel(self:kernel_options({})))
    k = assert(self.f.m:get_kernel(id))
    assert(self.f.m:destroy_kernel(id))
  end
  local cell
  if step["while"] ~= nil then
    cell = self:submit({ execute = step["while"].execute, kernel = step.kernel })
    if cell.refused then self:fail("the \"while\" cell was refused") end
    self:wait(function()
      if cell.calls > 0 then self:fail("the \"while\" cell ended before its marker") end
      return self:due(cell, step["while"].when)
    end, "the \"while\" cell's marker")
  end
  local sub, asked, interrupted
  if step.interrupt then
    -- The request call blocks: the interrupt is made from the first event of the kernel that
    -- its listener gets while the request is in flight (the case keeps something printing).
    sub = self.f.m:on_kernel_event(k.id, kernelhost.KernelEvents.ALL, function()
      if asked then return end
      asked = true
      interrupted = { k:interrupt() }
    end)
  end
  local reply, msg, code = self:editor_call(step.request, step, k)
  if sub ~= nil then
    self.f.m:off_kernel_event(sub)
    if not asked then self:fail("no event of the kernel came while the request was in flight") end
    if not interrupted[1] then
      self:fail("interrupt during the request failed: %s", tostring(interrupted[2]))
    end
  end
  if cell ~= nil and cell.calls > 0 and not step.interrupt then
    self:fail("the \"while\" cell ended before the answer: the request waited for it")
  end
  local want = exp.refused or exp.failed
  self:outcome({ code = want, message = exp.message }, reply ~= nil, msg, code, step.request)
  if exp.reply ~= nil then self:expect(exp.reply, reply, step.request) end
  if cell ~= nil then
    assert(cell.kernel:interrupt())
    self:wait(function() return cell.calls > 0 end, "the \"while\" cell's end")
  end
end

-- --- host functions ("expose", "host_calls": tests/cases/README.md, "Host functions") --------

-- A VALUE of a case as the host answers it: {"$bytes": HEX} as kernelhost.bytes, the rest as
-- dkjson decoded it (its metatables tell arrays from objects, as the binding reads them).
local function to_host(v)
  if type(v) ~= "table" then return v end
  if json_kind(v) == "object" and type(v["$bytes"]) == "string" and next(v, next(v)) == nil then
    return kernelhost.bytes(from_hex(v["$bytes"]))
  end
  local out = {}
  for k, x in pairs(v) do out[k] = to_host(x) end
  return setmetatable(out, getmetatable(v))
end

-- Records a failure seen inside a callback, where raising would only reach the binding's
-- "error" report: the step that follows fails with it.
function Run:problem(fmt, ...)
  self.problems[#self.problems + 1] = fmt:format(...)
end

function Run:check_problems()
  if #self.problems > 0 then self:fail("%s", table.concat(self.problems, "; ")) end
end

-- Answers a held call now: with a value (is_error false) or an error message.
function Run:answer(call, is_error, v)
  local ok, msg, code
  if is_error then
    ok, msg, code = call:error(v)
  else
    ok, msg, code = call:return_(v)
  end
  if not ok and code ~= "KH_ECANCELED" then
    self:problem("answering %s failed: %s: %s", call.name, tostring(code), tostring(msg))
  end
end

-- The later answers ("later": true), given from the pump: after the loop turn that held them.
function Run:pump()
  local due = self.later
  self.later = {}
  for _, a in ipairs(due) do self:answer(a.call, a.is_error, a.value) end
end

-- Runs the loop until cond() holds, answering later calls between turns.
function Run:wait(cond, what)
  H.wait(self.f, function()
    self:pump()
    self:check_problems()
    return cond()
  end, what)
end

-- The Lua function for behaviour bh of host function fn ({name, kernel, calls}), and whether
-- it answers through a handle.
function Run:host_function(fn, bh)
  local later = bh.later == true
  local function record(...)
    if self.in_call and not self.host_thread[fn.kernel] then
      self:problem("host function %s ran inside an API call", fn.name)
    end
    local args = table.pack(...)
    local rec = setmetatable({}, getmetatable(kernelhost.empty_array))
    for i = 1, args.n do rec[i] = args[i] == nil and NULL or args[i] end
    fn.calls[#fn.calls + 1] = rec
    return rec
  end
  if bh.run ~= nil then
    return true, function(call, ...)
      record(...)
      self.held[#self.held + 1] = call
      local target = self:kernel(bh.run.kernel)
      local id, _, code = target:submit(code_of(bh.run.code), function(reply, _, c)
        if reply == nil then
          self:answer(call, true, c)
        elseif reply.status == "ok" then
          self:answer(call, false, reply.result and reply.result.data["text/plain"] or "")
        else
          self:answer(call, true, ("%s: %s"):format(reply.error.ename, reply.error.evalue))
        end
      end)
      if id == nil then self:answer(call, true, code) end
    end
  end
  local is_error, value = bh.error ~= nil, bh.error
  if bh["return"] ~= nil then value = to_host(bh["return"]) end
  if bh.echo == nil and bh.error == nil and bh["return"] == nil then
    self:fail("host function %s has no behaviour", fn.name)
  end
  if later then
    return true, function(call, ...)
      local rec = record(...)
      self.held[#self.held + 1] = call
      self.later[#self.later + 1] = { call = call, is_error = is_error,
                                      value = bh.echo and rec or value }
    end
  end
  return false, function(...)
    local rec = record(...)
    if is_error then error(value) end
    if bh.echo then return rec end
    return value
  end
end

function Run:expose(step)
  local kname = step.kernel or "k"
  local k = self:kernel(kname)
  local names = {}
  for name in pairs(step.expose) do names[#names + 1] = name end
  table.sort(names) -- dkjson keeps no key order; the cases' steps succeed or fail as a whole
  local ok, msg, code = true, nil, nil
  for _, name in ipairs(names) do
    local bh = step.expose[name]
    local key = kname .. "\0" .. name
    local fn = self.fns[key]
    if fn == nil and bh ~= NULL then
      fn = { name = name, kernel = kname, calls = {} }
      self.fns[key] = fn
    end
    self.in_call = true
    if bh == NULL then
      ok, msg, code = k:expose(name, nil)
    else
      local async, f = self:host_function(fn, bh)
      ok, msg, code = k:expose(name, f, { async = async, bytes = true })
    end
    self.in_call = false
    if not ok then break end
  end
  self:outcome(step.expect, ok, msg, code, "expose")
end

function Run:host_calls(step)
  local fn = self.fns[(step.kernel or "k") .. "\0" .. step.host_calls]
  self:expect(step.expect, fn and fn.calls or {}, "host_calls")
end

-- Every call a host function held was answered by the end of the case.
function Run:check_held()
  self:pump()
  for _, call in ipairs(self.held) do
    if call.pending then self:fail("host function %s never answered a call", call.name) end
  end
  self:check_problems()
end

function Run:run_step(step)
  if step.execute ~= nil or step.comm ~= nil then
    local first = #self.reqs + 1
    if step.comm ~= nil then self:submit_comm(step) else self:submit(step) end
    self:wait_requests(first, step.during)
    self:check_request(self.reqs[first])
  elseif step.batch ~= nil then
    local first = #self.reqs + 1
    for _, item in ipairs(step.batch) do
      if item.comm ~= nil then self:submit_comm(item) else self:submit(item) end
    end
    self:wait_requests(first, step.during)
    for i = first, #self.reqs do self:check_request(self.reqs[i]) end
    self:check_batch_order(first)
  elseif step.create ~= nil then
    self:create(step.create, step.options, step.expect)
  elseif step.manager ~= nil then
    local m, msg, code = kernelhost.KernelManager.new(exec_options(step.manager))
    self:outcome(step.expect, m ~= nil, msg, code, "manager")
    if m then assert(m:close()) end
  elseif step.kernel_events ~= nil then
    self:kernel_events(step.kernel_events, step.expect)
  elseif step.info ~= nil then
    self:expect(step.expect, self.f.m:kernel_info(self:kernel(step.info).id), "info")
  elseif step.request ~= nil then
    self:request(step)
  elseif step.list ~= nil then
    self:expect(step.expect, assert(self.f.m:list_kernels(step.list ~= NULL and step.list or nil)),
                "list")
  elseif step.expose ~= nil then
    self:expose(step)
  elseif step.host_calls ~= nil then
    self:host_calls(step)
  else
    for _, verb in ipairs({ "restart", "destroy", "interrupt", "input_reply" }) do
      if step[verb] ~= nil then return self:kernel_call(verb, step) end
    end
    self:fail("a step with no known verb")
  end
end

local function run_case(case, mode)
  local r = new_run(case, mode)
  local ok, err = pcall(function()
    if case.kernel ~= NULL then r:create("k", case.kernel, nil) end
    for i, step in ipairs(case.steps) do
      r.step = i
      r:run_step(step)
      r:check_problems()
    end
    r.step = 0
    r:check_held()
    r:check_comms()
  end)
  H.close(r.f)
  assert(ok, err) -- luassert's: a mismatch is a failure, not an error
  -- A refused request's callback never runs, not even when the manager closes.
  for _, q in ipairs(r.reqs) do
    if q.refused and q.calls ~= 0 then r:fail("the callback of a refused call ran") end
    if not q.refused and q.calls ~= 1 then r:fail("a request never completed") end
  end
end

for _, file in ipairs(load_files()) do
  describe("cases: " .. file.concept, function()
    for _, case in ipairs(file.cases) do
      local mode = case.only or H.mode()
      if case.only and case.only ~= H.mode() then
        pending(case.name .. " (" .. case.only .. " only: " .. case.reason .. ")")
      else
        it(case.name, function() run_case(case, mode) end)
      end
    end
  end)
end
