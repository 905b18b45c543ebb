"""Sandboxed Lua 5.4 for `script` steps and `when: {lua: ...}` predicates. Plain Python: no Django.

Each call gets a fresh runtime that can reach no files, processes, modules or Python objects, and
that stops at an instruction budget, a memory limit and a wall-clock deadline:

- Instructions are counted by a debug hook installed before `debug` is removed. Once a limit is
  hit the hook raises on every later check and `pcall`/`xpcall` re-raise it, so a script that
  catches the error still cannot keep running.
- Memory is capped by lupa's allocator: an allocation over the limit fails inside Lua (the input
  counts towards the limit), so a script never makes the worker hold more than the limit.
- Library loops written in C run without the hook. The ones that can loop without allocating
  (`string.rep("", n)`, `table.move`, positional `table.insert`/`table.remove`) pay for their
  iterations up front; finalizers (`__gc`, which run with hooks off) are refused; coroutines
  (which the hook would not follow) are absent. Lua's pattern matcher is the one C loop left: a
  pathological pattern can backtrack for minutes. So the script runs in its own thread and the
  caller gets its answer at the deadline regardless; an abandoned thread stops by itself as soon
  as it is back in the VM, when the hook sees that the deadline has passed.

Values cross as JSON: inputs become real Lua tables (never Python proxies), and the result is
encoded to JSON inside Lua, under the same limits, and decoded here. A table whose keys are 1..n
is a list, any other table an object with string keys (sorted); an empty table is `{}` unless it
came from an input list. nil cannot be stored in a table, so a null inside an input object is
absent in Lua and a null inside an input list leaves a hole (which comes back as null).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import lupa.lua54 as lua54

DEFAULT_INSTRUCTIONS = 10_000_000
DEFAULT_MEMORY = 64 * 2**20
DEFAULT_SECONDS = 10.0
MAX_INSTRUCTIONS = 1_000_000_000
MAX_MEMORY = 512 * 2**20
MAX_DEPTH = 200
"""Tables nested deeper than this cannot cross (Python's JSON decoder recurses)."""
MAX_LOCALS = 100
"""Input keys bound as locals; Lua allows 200 locals per function and the script needs some."""
MAX_PRINT_BYTES = 1_000_000
"""Printed text kept per script, so a chatty loop cannot flood the step log."""
HOOK_STEP = 1000
"""VM instructions between two hook calls: the budget's granularity."""
TRIM_ABOVE = 16 * 2**20
"""Lua heap in use at the end of a script above which freed memory is handed back to the OS."""
JOIN_GRACE_SECONDS = 0.25
"""How long past the deadline the caller waits for the hook to stop the script itself."""

# fmt: off
LUA_KEYWORDS = frozenset({
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
})
# fmt: on
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_POSITION = re.compile(r"^script:(\d+): ")
_SANDBOX_POSITION = re.compile(r"^sandbox:\d+: ")
_CHUNK_NAME = "=script"  # "=" makes Lua print the name as is: "script:3: ..."

LogSink = Callable[[str, str], None]


class ErrorKind(StrEnum):
    SYNTAX = "syntax"
    RUNTIME = "runtime"
    INSTRUCTIONS = "instructions"
    MEMORY = "memory"
    TIME = "time"
    CANCELLED = "cancelled"
    RESULT = "result"
    """The script returned something that is not JSON, or a predicate returned a non-boolean."""
    INPUT = "input"


class ScriptError(Exception):
    """A script that did not compile, failed, hit a limit or returned what cannot cross back.

    The message is for the workflow's author; `kind` says which of those happened.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class _Limits:
    """The limits of one call; out-of-range values are a programming error (ValueError)."""

    instructions: int = DEFAULT_INSTRUCTIONS
    memory: int = DEFAULT_MEMORY
    """Bytes of Lua heap."""
    seconds: float = DEFAULT_SECONDS

    def __post_init__(self) -> None:
        if not 1 <= self.instructions <= MAX_INSTRUCTIONS:
            raise ValueError(f"instruction_limit must be 1..{MAX_INSTRUCTIONS}")
        if not 2**20 <= self.memory <= MAX_MEMORY:
            raise ValueError(f"memory_limit must be {2**20}..{MAX_MEMORY} bytes")


def run_script(
    source: str,
    inputs: Any,
    *,
    instruction_limit: int = DEFAULT_INSTRUCTIONS,
    memory_limit: int = DEFAULT_MEMORY,
    time_limit: float = DEFAULT_SECONDS,
    log: LogSink | None = None,
    cancel: threading.Event | None = None,
) -> Any:
    """Run `source` as a Lua chunk and return its first return value, as JSON-like Python.

    `inputs` is the global `input`. When it is a mapping, each key that is a Lua identifier is
    also a local of the chunk (Spuds' rule), so `return status == "active"` works; such a local
    hides a global of the same name (`_G.type` still reaches the function). A table with keys
    1..n comes back as a list, any other table as a dict with string keys. Each `print` sends its
    line to `log("stdout", line)`. Raises ScriptError; ValueError for limits out of range.
    """
    limits = _Limits(instruction_limit, memory_limit, time_limit)
    job = _Job(
        sources=(source,),
        globals={"input": inputs},
        prologue=_prologue("input", inputs),
        boolean_only=False,
        limits=limits,
        log=log,
        cancel=cancel,
    )
    return _run_job(job)


def evaluate_predicate(
    source: str,
    context: Mapping[str, Any],
    *,
    instruction_limit: int = DEFAULT_INSTRUCTIONS,
    memory_limit: int = DEFAULT_MEMORY,
    time_limit: float = DEFAULT_SECONDS,
    cancel: threading.Event | None = None,
) -> bool:
    """Evaluate a `when: {lua: ...}` guard: a chunk that returns a boolean, or a bare expression.

    Each key of `context` (input, steps, run, item) is a global and, when it is an identifier, a
    local. Raises ScriptError, with kind RESULT when the value is not a boolean.
    """
    limits = _Limits(instruction_limit, memory_limit, time_limit)
    job = _Job(
        sources=(f"return {source}", source),
        globals=context,
        prologue=_prologue(None, context),
        boolean_only=True,
        limits=limits,
        log=None,
        cancel=cancel,
    )
    result: bool = _run_job(job)
    return result


def check_syntax(source: str, *, predicate: bool = False) -> str | None:
    """Why `source` does not compile, or None. Compiles only: nothing in it runs.

    With `predicate`, a bare expression is accepted too, as evaluate_predicate accepts it.
    """
    lua = lua54.LuaRuntime(
        encoding=None, register_eval=False, register_builtins=False, max_memory=DEFAULT_MEMORY
    )
    candidates = (f"return {source}", source) if predicate else (source,)
    try:
        _compile(lua, candidates, "")
    except ScriptError as exc:
        return exc.message
    except lua54.LuaMemoryError:
        return f"the script is too large to compile in {DEFAULT_MEMORY // 2**20} MB"
    return None


@dataclass(frozen=True)
class _Job:
    sources: tuple[str, ...]
    """Tried in order: the first that compiles runs."""
    globals: Mapping[str, Any]
    prologue: str
    """Lua statements on the chunk's first line (same line, so line numbers stay the user's)."""
    boolean_only: bool
    limits: _Limits
    log: LogSink | None
    cancel: threading.Event | None


def _prologue(table: str | None, values: Any) -> str:
    """`local a, b = input.a, input.b;` (or `= a, b` when the names are globals themselves)."""
    if not isinstance(values, Mapping):
        return ""
    names = [name for name in values if _is_local_name(name)][:MAX_LOCALS]
    if not names:
        return ""
    sources = [f"{table}.{name}" if table else name for name in names]
    return f"local {', '.join(names)} = {', '.join(sources)}; "


def _is_local_name(name: Any) -> bool:
    # `_ENV` is a valid name, but binding it would replace the chunk's globals.
    return (
        isinstance(name, str)
        and _IDENTIFIER.match(name) is not None
        and name not in LUA_KEYWORDS
        and name != "_ENV"
    )


def _run_job(job: _Job) -> Any:
    """Run the job in its own thread; give up waiting at the deadline (see the module docstring)."""
    deadline = time.monotonic() + job.limits.seconds
    printer = _Printer(job.log)
    box: dict[str, Any] = {}

    def target() -> None:
        sandbox = None
        try:
            sandbox = _Sandbox(job, deadline, printer)
            box["value"] = sandbox.run()
        except ScriptError as exc:
            # A fresh error: the caught one's traceback and context would keep the runtime (and
            # its memory) alive for as long as the caller holds the error.
            box["error"] = ScriptError(exc.kind, exc.message)
        except BaseException as exc:  # a bug: re-raised in the caller's thread
            box["error"] = exc
        finally:
            used = sandbox.memory_used if sandbox is not None else 0
            del sandbox
            if used > TRIM_ABOVE:
                _give_memory_back()

    thread = threading.Thread(target=target, name="furrow-lua", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE_SECONDS)
    if thread.is_alive():
        printer.log = None  # the step has ended: nothing the abandoned script prints belongs to it
        raise _stopped(ErrorKind.TIME, job.limits)
    error, value = box.pop("error", None), box.pop("value", None)
    if error is not None:
        raise error
    return value


class _Sandbox:
    """One fresh runtime with the sandbox installed, used for one job and then dropped."""

    def __init__(self, job: _Job, deadline: float, printer: _Printer) -> None:
        self.job = job
        self.memory_used = 0
        limits = job.limits
        # No limit yet: building the sandbox and the input goes through C API calls that Lua
        # does not protect, and an allocation refused there aborts the whole process. The limit
        # is set before any script code runs, and the input counts towards it.
        self.lua = lua54.LuaRuntime(
            encoding=None,  # strings cross as bytes: a str argument would arrive as a Python object
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_refuse_attribute,
            max_memory=0,
        )
        self.runner, self.arrays = self.lua.execute(
            _SANDBOX_LUA,
            limits.instructions,
            min(HOOK_STEP, limits.instructions),
            _watch(deadline, job.cancel),
            printer,
            MAX_DEPTH,
            name="=sandbox",
        )

    def run(self) -> Any:
        try:
            self._bind_globals()
            self.lua.set_max_memory(self.job.limits.memory)
            chunk = _compile(self.lua, self.job.sources, self.job.prologue)
            status, payload = self.runner(chunk, self.job.boolean_only)
        except lua54.LuaMemoryError:
            raise _stopped(ErrorKind.MEMORY, self.job.limits) from None
        finally:
            self.memory_used = self.lua.get_memory_used() or 0
        return _outcome(status.decode(), payload, self.job.limits)

    def _bind_globals(self) -> None:
        table = self.lua.globals()
        for name, value in self.job.globals.items():
            table[_lua_key(name)] = self._to_lua(value, 0)
            self._check_input_size()

    def _check_input_size(self) -> None:
        if self.lua.get_memory_used() > self.job.limits.memory:
            raise ScriptError(
                ErrorKind.MEMORY,
                f"the input does not fit in the script's memory limit of "
                f"{self.job.limits.memory / 2**20:g} MB",
            )

    def _to_lua(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            # Lua integers are 64-bit; JSON numbers beyond that become floats, as in JavaScript.
            return value if lua54.LUA_MININTEGER <= value <= lua54.LUA_MAXINTEGER else float(value)
        if isinstance(value, str):
            return _encode(value)
        if depth >= MAX_DEPTH:
            raise ScriptError(ErrorKind.INPUT, f"input is nested more than {MAX_DEPTH} deep")
        if isinstance(value, Mapping):
            return self._table(value.items(), depth, is_list=False)
        if isinstance(value, list | tuple):
            return self._table(enumerate(value, 1), depth, is_list=True)
        raise ScriptError(
            ErrorKind.INPUT, f"input holds a {type(value).__name__}, which is not JSON"
        )

    def _table(self, items: Any, depth: int, *, is_list: bool) -> Any:
        table = self.lua.table()
        for key, item in items:
            if item is not None:  # nil cannot be stored in a table
                table[key if is_list else _lua_key(key)] = self._to_lua(item, depth + 1)
        if is_list:
            self.arrays[table] = True  # so an empty list comes back as [] and holes as null
        self._check_input_size()
        return table


def _lua_key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise ScriptError(
            ErrorKind.INPUT, f"input has a key of type {type(key).__name__}; keys must be strings"
        )
    return _encode(key)


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ScriptError(
            ErrorKind.INPUT, "input holds a string that is not valid Unicode"
        ) from None


def _compile(lua: Any, sources: tuple[str, ...], prologue: str) -> Any:
    """The first of `sources` that compiles (text only: precompiled bytecode could crash Lua)."""
    error = ""
    for source in sources:
        try:
            return lua.compile(_encode_source(prologue + source), name=_CHUNK_NAME, mode="t")
        except lua54.LuaSyntaxError as exc:
            error = _text(exc.args[0] if exc.args else "")
    raise ScriptError(ErrorKind.SYNTAX, _syntax_message(error))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _encode_source(source: str) -> bytes:
    try:
        return source.encode("utf-8")
    except UnicodeEncodeError:
        raise ScriptError(ErrorKind.SYNTAX, "the script is not valid Unicode") from None


def _syntax_message(raw: str) -> str:
    message = raw.removeprefix("error loading code: ").strip()
    position = _POSITION.match(message)
    if position:
        return f"syntax error at line {position.group(1)}: {message[position.end() :]}"
    return f"syntax error: {message}"


def _runtime_message(raw: str) -> str:
    position = _POSITION.match(raw)
    if position:
        return f"script error at line {position.group(1)}: {raw[position.end() :]}"
    # After a tail call (`return f()`) Lua no longer knows the script's line; it names the
    # sandbox's, which would only confuse.
    return f"script error: {_SANDBOX_POSITION.sub('', raw, count=1)}"


def _outcome(status: str, payload: bytes | None, limits: _Limits) -> Any:
    """The Python value the runner's (status, payload) stands for, or the ScriptError it means."""
    text = _text(payload) if payload is not None else ""
    if status == "ok":
        return json.loads(payload or b"null")
    if status == "error":
        raise ScriptError(ErrorKind.RUNTIME, _runtime_message(text))
    if status == "result":
        raise ScriptError(ErrorKind.RESULT, text)
    if status == "type":
        raise ScriptError(ErrorKind.RESULT, f"a when predicate must return a boolean, got {text}")
    raise _stopped(ErrorKind(status), limits)


def _stopped(kind: ErrorKind, limits: _Limits) -> ScriptError:
    messages = {
        ErrorKind.INSTRUCTIONS: (
            f"script exceeded its instruction budget of {limits.instructions:,} instructions"
        ),
        ErrorKind.MEMORY: f"script exceeded its memory limit of {limits.memory / 2**20:g} MB",
        ErrorKind.TIME: f"script exceeded its time limit of {limits.seconds:g}s",
        ErrorKind.CANCELLED: "script was cancelled",
    }
    return ScriptError(kind, messages[kind])


def _refuse_attribute(obj: Any, name: Any, is_setting: bool) -> Any:
    # No Python object should be reachable from a script; if one ever is, it stays opaque.
    raise AttributeError("Python objects are not accessible from scripts")


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def _give_memory_back() -> None:
    """glibc keeps freed heap for reuse; after a big script, hand it back to the OS so one
    memory-hungry script does not leave the worker hundreds of MB larger."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_TIME_UP = 1
_CANCELLED = 2


def _watch(deadline: float, cancel: threading.Event | None) -> Callable[[], int | None]:
    """What the hook asks between instructions: None to go on, or why to stop."""

    def check() -> int | None:
        if cancel is not None and cancel.is_set():
            return _CANCELLED
        if time.monotonic() >= deadline:
            return _TIME_UP
        return None

    return check


class _Printer:
    """The sink behind `print`: one log line per printed line, up to MAX_PRINT_BYTES in all."""

    def __init__(self, log: LogSink | None) -> None:
        self.log = log
        self.left = MAX_PRINT_BYTES

    def __call__(self, text: bytes) -> None:
        log = self.log
        if log is None or self.left <= 0:
            return
        # Logging is best effort, and an exception raised into Lua would hand the script a
        # Python object.
        with contextlib.suppress(Exception):
            self._emit(log, text)

    def _emit(self, log: LogSink, text: bytes) -> None:
        kept = text[: self.left]
        self.left -= len(text)
        for line in kept.decode("utf-8", errors="replace").split("\n"):
            log("stdout", line)
        if self.left <= 0:
            log("system", f"print output truncated after {MAX_PRINT_BYTES:,} bytes")


# Runs first in each fresh runtime. It keeps what the sandbox needs in locals (a script can
# replace globals and library fields, not these), wraps the functions that could escape the
# limits, installs the hook and strips the globals. It returns the runner and the table that
# marks which tables came from Python lists.
_SANDBOX_LUA = r"""
local limit, step, check, sink, max_depth = ...

local sethook = debug.sethook
local raw_pcall, raw_xpcall, raw_error, raw_setmetatable = pcall, xpcall, error, setmetatable
local ipairs, next, rawget, select = ipairs, next, rawget, select
local tonumber, tostring, type = tonumber, tostring, type
local mathtype, huge = math.type, math.huge
local char, find, format, gsub, rep = string.char, string.find, string.format, string.gsub, string.rep
local concat, insert, move, pack, remove, sort =
  table.concat, table.insert, table.move, table.pack, table.remove, table.sort
local utf8len = utf8.len

local MEMORY_ERROR = "not enough memory"
local STOP_MESSAGES = {
  instructions = "instruction budget exceeded",
  time = "time limit exceeded",
  cancelled = "cancelled",
  memory = MEMORY_ERROR,
}
local CHECKS = { "time", "cancelled" }

local used, reason = 0, nil

local function stop()
  raw_error(STOP_MESSAGES[reason], 0)
end

-- Once a limit is hit, every later call raises again: catching the error buys nothing.
local function hook()
  used = used + step
  if reason == nil then
    if used >= limit then
      reason = "instructions"
    else
      local code = check()
      if code ~= nil then reason = CHECKS[code] end
    end
  end
  if reason ~= nil then stop() end
end

-- For library loops in C, which run without the hook: they pay for their iterations up front.
local function charge(count)
  if count > 0 then used = used + count end
  if reason == nil and used >= limit then reason = "instructions" end
  if reason ~= nil then stop() end
end

local function settle(ok, ...)
  if reason ~= nil then stop() end
  if not ok and ... == MEMORY_ERROR then
    reason = "memory"
    stop()
  end
  return ok, ...
end

pcall = function(f, ...) return settle(raw_pcall(f, ...)) end

xpcall = function(f, handler, ...)
  -- An error raised by the hook calls the handler from inside the hook, where hooks are off:
  -- after a stop the script's handler must not run at all.
  local function guarded(err)
    if reason ~= nil then return err end
    return handler(err)
  end
  return settle(raw_xpcall(f, guarded, ...))
end

-- The wrappers below call library functions through raw_pcall, so their errors would blame
-- this file and name the function '?'. forward() re-raises them at the script's line (it runs
-- as a tail call, in the wrapper's place, so level 2 is the script) with the function's name.
local function forward(name, ok, ...)
  if ok then return ... end
  if reason ~= nil then stop() end
  local err = ...
  if err == MEMORY_ERROR then
    reason = "memory"
    stop()
  end
  if type(err) ~= "string" or find(err, "^script:%d+:") then raw_error(err, 0) end
  err = gsub(gsub(err, "^sandbox:%d+: ", ""), "to '%?'", "to '" .. name .. "'")
  raw_error(err, 2)
end

setmetatable = function(t, mt)
  -- Finalizers run with hooks disabled (during a collection or when the runtime closes).
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    raw_error("__gc metamethods are not allowed in scripts", 2)
  end
  return forward("setmetatable", raw_pcall(raw_setmetatable, t, mt))
end

string.rep = function(s, n, sep)
  -- With an empty result Lua still loops n times: rep("", 1e18) would never return.
  if s == "" and (sep == nil or sep == "") then charge(tonumber(n) or 0) end
  return forward("rep", raw_pcall(rep, s, n, sep))
end

table.move = function(a1, f, e, t, a2)
  charge((tonumber(e) or 0) * 1.0 - (tonumber(f) or 0) + 1)
  return forward("move", raw_pcall(move, a1, f, e, t, a2))
end

-- #t can be huge without memory to match (a __len, or a sparse table's border), and these
-- shift every element from pos to #t.
local function length(t)
  return type(t) == "table" and tonumber(#t) or 0
end

table.insert = function(t, ...)
  if select("#", ...) >= 2 then charge(length(t) * 1.0 - (tonumber((...)) or 0) + 1) end
  return forward("insert", raw_pcall(insert, t, ...))
end

table.remove = function(t, ...)
  if select("#", ...) >= 1 then charge(length(t) * 1.0 - (tonumber((...)) or 0)) end
  return forward("remove", raw_pcall(remove, t, ...))
end

local function print_line(...)
  local args = pack(...)
  for i = 1, args.n do args[i] = tostring(args[i]) end
  sink(concat(args, "\t", 1, args.n))
end

print = function(...) return forward("print", raw_pcall(print_line, ...)) end

-- The result crosses as JSON text, built here under the same limits.
local arrays = raw_setmetatable({}, { __mode = "k" })
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for code = 0, 31 do ESCAPES[char(code)] = ESCAPES[char(code)] or format("\\u%04x", code) end
ESCAPES["\127"] = "\\u007f"

local out, size, path, on_path

local function emit(text)
  size = size + 1
  out[size] = text
end

local function fail(what, depth)
  local where = { "result" }
  for i = 1, depth - 1 do
    local key = path[i]
    where[i + 1] = mathtype(key) == "integer" and format("[%d]", key) or ("." .. key)
  end
  local at = depth > 1 and (" at " .. concat(where)) or ""
  raw_error("script returned " .. what .. at .. ", which is not JSON", 0)
end

local function number(x, depth)
  if mathtype(x) == "integer" then return format("%d", x) end
  if x ~= x then fail("NaN", depth) end
  if x == huge or x == -huge then fail("an infinite number", depth) end
  local text = format("%.17g", x)
  if not find(text, "[.e]") then text = text .. ".0" end -- a float stays a float
  return text
end

local function quote(s, depth)
  if not utf8len(s) then fail("a string that is not valid UTF-8", depth) end
  return '"' .. gsub(s, '[%c"\\]', ESCAPES) .. '"'
end

local function key_text(key, depth)
  local kind = type(key)
  if kind == "string" then return key end
  if kind == "number" then return number(key, depth) end
  fail("a table key of type " .. kind, depth)
end

-- A table is a list when its keys are 1..n; one that came from a Python list stays a list
-- when empty or with holes (a null inside the list).
local function array_length(t)
  local count, top = 0, 0
  for key in next, t do
    if mathtype(key) ~= "integer" or key < 1 then return nil end
    count = count + 1
    if key > top then top = key end
  end
  if arrays[t] or (count > 0 and count == top) then return top end
  return nil
end

local encode

local function encode_array(t, n, depth)
  emit("[")
  for i = 1, n do
    if i > 1 then emit(",") end
    path[depth] = i
    encode(rawget(t, i), depth + 1)
  end
  emit("]")
end

local function encode_object(t, depth)
  local texts, keys = {}, {}
  for key in next, t do
    local text = key_text(key, depth)
    if texts[text] ~= nil then fail('two keys that both read "' .. text .. '"', depth) end
    texts[text] = key
    keys[#keys + 1] = text
  end
  sort(keys)
  emit("{")
  for i, text in ipairs(keys) do
    if i > 1 then emit(",") end
    emit(quote(text, depth))
    emit(":")
    path[depth] = text
    encode(rawget(t, texts[text]), depth + 1)
  end
  emit("}")
end

local function encode_table(t, depth)
  if on_path[t] then fail("a table that contains itself", depth) end
  if depth > max_depth then fail(format("tables nested more than %d deep", max_depth), depth) end
  on_path[t] = true
  local n = array_length(t)
  if n then encode_array(t, n, depth) else encode_object(t, depth) end
  on_path[t] = nil
end

encode = function(value, depth)
  local kind = type(value)
  if kind == "nil" then emit("null")
  elseif kind == "boolean" then emit(value and "true" or "false")
  elseif kind == "number" then emit(number(value, depth))
  elseif kind == "string" then emit(quote(value, depth))
  elseif kind == "table" then encode_table(value, depth)
  else fail("a " .. kind, depth) end
end

local function export(value)
  out, size, path, on_path = {}, 0, {}, {}
  encode(value, 1)
  return concat(out, "", 1, size)
end

local function first(chunk)
  return (chunk())
end

local function describe(err)
  local kind = type(err)
  if kind == "string" then return err end
  if kind == "number" then return tostring(err) end
  return "(error object is a " .. kind .. " value)"
end

local function outcome(ok, value)
  if reason ~= nil then return reason end
  if ok then return nil end
  if value == MEMORY_ERROR then return "memory" end
  return "error", value
end

local function run(chunk, boolean_only)
  used = 0
  local ok, result = raw_xpcall(first, describe, chunk)
  local status, message = outcome(ok, result)
  if status ~= nil then return status, message end
  if boolean_only then
    if type(result) ~= "boolean" then return "type", type(result) end
    return "ok", result and "true" or "false"
  end
  used = 0 -- encoding the result gets a budget of its own
  ok, result = raw_xpcall(export, describe, result)
  status, message = outcome(ok, result)
  if status == "error" then return "result", message end
  if status ~= nil then return status, message end
  return "ok", result
end

for _, name in ipairs({
  "collectgarbage", "coroutine", "debug", "dofile", "io", "load", "loadfile", "loadstring",
  "os", "package", "python", "require", "warn",
}) do
  _G[name] = nil
end
string.dump = nil

sethook(hook, "", step)
return run, arrays
"""
