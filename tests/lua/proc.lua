-- proc.lua: process helpers for the worker and sandbox specs (what tests/c gets from libc):
-- this process's pid, its children, open descriptors, waiting for a pid to exit while a
-- manager's loop runs, temporary trees, and child Lua hosts run with their own environment.
-- Plain Lua and /proc only, so the specs need no luaposix.
local P = {}

local function read_file(path)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local s = fh:read("a")
  fh:close()
  return s
end
P.read_file = read_file

function P.write_file(path, text)
  local fh = assert(io.open(path, "wb"))
  assert(fh:write(text))
  fh:close()
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
P.quote = q

-- The interpreter running the specs: child hosts run the same Lua (lua5.4, or luajit).
P.LUA = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

-- How a command ended, as Lua 5.2+ says it: true | nil, "exit" | "signal", code. Lua 5.1
-- (LuaJIT) says less: os.execute returns the raw wait status, and a popen handle's close()
-- returns true whatever happened, so there the shell writes $? to a file for close() to read.
local legacy = _VERSION == "Lua 5.1"

local function status_of(code)
  if code > 128 then return nil, "signal", code - 128 end
  return code == 0 or nil, "exit", code
end

function P.execute(cmd)
  if not legacy then return os.execute(cmd) end
  local st = os.execute(cmd)
  if st % 256 ~= 0 then return nil, "signal", st % 128 end
  return status_of(math.floor(st / 256))
end

-- io.popen(cmd, "r") whose close() returns how the command ended (see P.execute).
function P.popen(cmd)
  if not legacy then return io.popen(cmd, "r") end
  local status = os.tmpname()
  local fh, err = io.popen("(" .. cmd .. "); echo $? > " .. q(status), "r")
  if not fh then return nil, err end
  return {
    read = function(_, ...) return fh:read(...) end,
    close = function()
      fh:close() -- waits for the shell, which wrote the status before it exited
      local code = tonumber(read_file(status) or "")
      os.remove(status)
      if code == nil then return nil, "exit", -1 end
      return status_of(code)
    end,
  }
end

-- Runs a shell command; returns its stdout (the command must succeed).
function P.sh(cmd)
  local fh = assert(P.popen(cmd))
  local out = fh:read("a")
  local ok, how, code = fh:close()
  assert(ok, ("%s: %s %s"):format(cmd, tostring(how), tostring(code)))
  return out
end

-- The pid of this Lua process (/proc/self is read by this process itself).
function P.self_pid()
  return tonumber(read_file("/proc/self/stat"):match("^(%d+)"))
end

-- State letter and parent pid of pid, or nil when there is no such process.
local function stat(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local state, ppid = s:match("%) (%S) (%d+)")
  return state, tonumber(ppid)
end

-- True while pid runs; an exited process (gone, or a zombie not reaped yet) is not alive.
function P.alive(pid)
  local state = stat(pid)
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Entries of a directory (no dot entries), through ls run in a child that is reaped before
-- this returns.
function P.list_dir(path)
  local out = {}
  for name in P.sh("ls -1A " .. q(path)):gmatch("[^\n]+") do
    if name:sub(1, 1) ~= "." then out[#out + 1] = name end
  end
  return out
end

-- This process's descriptors, "fd -> target" each, leaving out the pipe to the ls that lists
-- them: io.popen's child may list the fds before popen has closed its copy of the pipe's
-- write end, which would count one descriptor too many now and then.
function P.fd_list()
  local cmd = ("p=$(readlink /proc/$$/fd/1); ls -l /proc/%d/fd | grep -v -F -e \"$p\" " ..
               "| sed -n 's/.* \\([0-9]*\\) -> /\\1 -> /p'"):format(P.self_pid())
  local out = {}
  for line in P.sh(cmd):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- Number of descriptors and threads of this process.
function P.fd_count() return #P.fd_list() end
function P.thread_count() return #P.list_dir("/proc/" .. P.self_pid() .. "/task") end

-- Resident set size of this process, in kB.
function P.rss_kb()
  return tonumber(read_file("/proc/self/status"):match("VmRSS:%s*(%d+)"))
end

-- The set of pids whose parent is this process (pid -> true), and how many.
function P.children()
  local me, set, n = P.self_pid(), {}, 0
  for _, name in ipairs(P.list_dir("/proc")) do
    local pid = tonumber(name)
    if pid then
      local state, ppid = stat(pid)
      if state and ppid == me then
        set[pid] = true
        n = n + 1
      end
    end
  end
  return set, n
end

-- Runs the fixture's loop until cond() holds, for things the loop brings about without an
-- event of their own (a process reaped, a descriptor closed). Bounded: fails after a minute.
-- The 50 ms only caps each poll; the wait is on the loop.
function P.wait_until(f, cond, what)
  for _ = 1, 1200 do
    if cond() then return end
    assert(f.m:poll(50))
  end
  error("watchdog: never happened: " .. (what or "?"), 2)
end

-- Runs the fixture's loop (the worker is reaped there) until pid has exited.
function P.wait_pid_gone(f, pid, what)
  P.wait_until(f, function() return not P.alive(pid) end,
               ("process %d to exit: %s"):format(pid, what or "?"))
end

-- A fresh directory under /tmp.
function P.mkdtemp(prefix)
  local dir = P.sh("mktemp -d /tmp/" .. (prefix or "kh-lua-") .. "XXXXXX"):gsub("%s+$", "")
  assert(#dir > 0)
  return dir
end

function P.rmtree(dir)
  assert(dir:match("^/tmp/kh%-"), dir)
  os.execute("rm -rf " .. q(dir))
end

-- Writes a Lua script to a temporary file; returns its path.
function P.script(source)
  local path = os.tmpname()
  P.write_file(path, source)
  return path
end

-- Runs `source` in a child P.LUA (it inherits LUA_PATH/LUA_CPATH/KH_WORKER_PATH) with the
-- extra environment `env` (name -> value); waits for it to exit and returns its output
-- (stdout and stderr) as a table of key -> value from lines "key=value", plus the raw text.
function P.run_child(env, source)
  local path = P.script(source)
  local prefix = {}
  for k, v in pairs(env or {}) do prefix[#prefix + 1] = k .. "=" .. q(v) end
  local fh = assert(P.popen("env " .. table.concat(prefix, " ") .. " " .. P.LUA .. " " ..
                            q(path) .. " 2>&1"))
  local out = fh:read("a")
  local ok, how, code = fh:close()
  os.remove(path)
  local kv = {}
  for k, v in out:gmatch("([%w_]+)=([^\n]*)") do kv[k] = v end
  return kv, out, ok, how, code
end

return P
