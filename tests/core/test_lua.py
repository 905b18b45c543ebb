"""The Lua sandbox: values in and out, what scripts cannot reach, and the limits that stop them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.lua import (
    MAX_DEPTH,
    MAX_PRINT_BYTES,
    ErrorKind,
    ScriptError,
    check_syntax,
    evaluate_predicate,
    run_script,
)

ROOT = Path(__file__).resolve().parents[2]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_VALUES = st.recursive(
    st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
"""JSON without null inside containers: nil cannot be stored in a Lua table."""


def failure(source: str, inputs: Any = None, **limits: Any) -> ScriptError:
    with pytest.raises(ScriptError) as excinfo:
        run_script(source, inputs if inputs is not None else {}, **limits)
    return excinfo.value


def timed_failure(source: str, **limits: Any) -> tuple[ScriptError, float]:
    started = time.monotonic()
    error = failure(source, **limits)
    return error, time.monotonic() - started


# Values in and out


def test_inputs_arrive_as_the_global_table_input():
    assert run_script("return input.order.total * 2", {"order": {"total": 21}}) == 42


def test_each_identifier_key_of_the_inputs_is_also_a_local_as_in_spuds():
    assert run_script('return status == "active"', {"status": "active"}) is True
    assert run_script('return status == "active"', {"status": "closed"}) is False


def test_keys_that_cannot_be_lua_names_are_reachable_through_input_only():
    inputs = {"my-key": 1, "end": 2, "1st": 3, "_ENV": 4, "ok": 5}
    source = 'return {input["my-key"], input["end"], input["1st"], input._ENV, ok}'
    assert run_script(source, inputs) == [1, 2, 3, 4, 5]


def test_a_local_hides_the_global_of_the_same_name_but_G_still_reaches_it():
    source = "return {type, _G.type(type)}"
    assert run_script(source, {"type": "order"}) == ["order", "string"]


def test_a_local_and_the_input_field_are_the_same_table():
    source = "items[1] = 'changed' return input.items"
    assert run_script(source, {"items": ["original"]}) == ["changed"]


def test_a_list_or_scalar_input_is_bound_as_input_only():
    assert run_script("return #input", [1, 2, 3]) == 3
    assert run_script("return input .. '!'", "hi") == "hi!"
    assert run_script("return input == nil", None) is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("return {a = 1, b = {c = 'x'}}", {"a": 1, "b": {"c": "x"}}),
        ("return {10, 20, 30}", [10, 20, 30]),
        ("return {[1] = 'a', [2] = 'b'}", ["a", "b"]),
        ("return {[1] = 'a', [3] = 'c'}", {"1": "a", "3": "c"}),
        ("return {[1] = 'a', x = 'b'}", {"1": "a", "x": "b"}),
        ("return {[1.5] = 'a'}", {"1.5": "a"}),
        ("return {}", {}),
        ("return 42", 42),
        ("return 1.5", 1.5),
        ("return 2^53", 2.0**53),
        ("return 10 // 3", 3),
        ("return 'text'", "text"),
        ("return true", True),
        ("return nil", None),
        ("local x = 1", None),
        ("return 1, 2, 3", 1),
        ("return 'tab\\there \"quoted\" \\0 \\127 é'", 'tab\there "quoted" \x00 \x7f é'),
    ],
)
def test_the_returned_value_is_converted_to_json_like_python(source, expected):
    result = run_script(source, {})
    assert json.dumps(result) == json.dumps(expected)


def test_an_integral_float_stays_a_float_and_an_integer_an_int():
    assert run_script("return {1.0, 1, -0.0}", {}) == [1.0, 1, -0.0]
    assert [type(value) for value in run_script("return {1.0, 1}", {})] == [float, int]


def test_empty_lists_and_holes_from_the_input_come_back_as_lists():
    inputs = {"empty": [], "holes": [1, None, 3]}
    assert run_script("return input", inputs) == inputs


def test_a_null_value_in_an_input_object_is_absent_in_lua():
    assert run_script("return {input.a == nil, input}", {"a": None, "b": 1}) == [True, {"b": 1}]


def test_integers_beyond_64_bits_arrive_as_floats():
    assert run_script("return math.type(input.big)", {"big": 2**70}) == "float"


@settings(max_examples=150, deadline=None)
@given(value=st.none() | JSON_VALUES)
def test_json_values_round_trip_through_input_and_return(value):
    returned = run_script("return input", value)
    assert json.dumps(returned, sort_keys=True) == json.dumps(value, sort_keys=True)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("return function() end", "script returned a function, which is not JSON"),
        ("return {f = print}", "script returned a function at result.f, which is not JSON"),
        ("local t = {} t.self = t return t", "a table that contains itself at result.self"),
        ("return {1, {0/0}}", "script returned NaN at result[2][1], which is not JSON"),
        ("return math.huge", "script returned an infinite number, which is not JSON"),
        ("return {'\\255'}", "a string that is not valid UTF-8 at result[1]"),
        ("return {[true] = 1}", "script returned a table key of type boolean"),
        ("return {[1] = 'a', ['1'] = 'b', x = 1}", 'two keys that both read "1"'),
    ],
)
def test_a_result_that_is_not_json_is_refused(source, message):
    error = failure(source)
    assert error.kind == ErrorKind.RESULT
    assert message in str(error)


def test_a_shared_table_is_not_a_cycle():
    assert run_script("local t = {1} return {t, t}", {}) == [[1], [1]]


def test_a_result_nested_too_deeply_is_refused():
    source = f"local t = {{}} for i = 1, {MAX_DEPTH + 5} do t = {{t}} end return t"
    assert f"nested more than {MAX_DEPTH} deep" in str(failure(source))


def test_an_input_that_is_not_json_is_refused():
    error = failure("return 1", {"when": object()})
    assert error.kind == ErrorKind.INPUT
    assert str(error) == "input holds a object, which is not JSON"


# The sandbox


@pytest.mark.parametrize(
    "name",
    [
        "os",
        "io",
        "require",
        "package",
        "debug",
        "dofile",
        "loadfile",
        "load",
        "loadstring",
        "collectgarbage",
        "python",
        "coroutine",
        "warn",
        "string.dump",
        "('').dump",
    ],
)
def test_a_forbidden_global_is_nil(name):
    assert run_script(f"return {name} == nil", {}) is True


def test_the_safe_libraries_are_there():
    source = """
        return {
          string.format("%05.1f", math.pi), table.concat({"a", "b"}, "-"), utf8.char(233),
          select("#", 1, 2), tostring(nil), tonumber("0x10"), math.type(math.random(1, 6)),
          rawequal(1, 1), rawlen({1, 2}), ("x"):rep(3),
        }
    """
    expected = ["003.1", "a-b", "é", 2, "nil", 16, "integer", True, 2, "xxx"]
    assert run_script(source, {}) == expected


def test_pcall_and_error_still_work_for_ordinary_errors():
    source = "local ok, err = pcall(error, {code = 7}) return {ok, err.code}"
    assert run_script(source, {}) == [False, 7]


def test_nothing_reachable_from_the_globals_is_a_python_object():
    source = """
        local seen, found = {}, {}
        local function visit(value, path)
          local kind = type(value)
          if kind == "userdata" or kind == "thread" then found[#found + 1] = path end
          if kind ~= "table" and kind ~= "function" and kind ~= "string" then return end
          local mt = getmetatable(value)
          if mt ~= nil and not seen[mt] then seen[mt] = true visit(mt, path .. "<mt>") end
          if kind == "table" and not seen[value] then
            seen[value] = true
            for k, v in next, value do visit(k, path .. "<key>") visit(v, path .. "." .. tostring(k)) end
          end
        end
        visit(_G, "_G")
        visit("", "string")
        return {found = found, count = #found}
    """
    assert run_script(source, {"nested": {"list": [1, {"x": "y"}]}})["count"] == 0


def test_input_tables_are_plain_lua_tables_without_metatables():
    source = "return {type(input), getmetatable(input) == nil, getmetatable(input.a) == nil}"
    assert run_script(source, {"a": {"b": [1]}}) == ["table", True, True]


def test_a_finalizer_cannot_be_installed():
    error = failure("setmetatable({}, {__gc = function() while true do end end})")
    assert error.kind == ErrorKind.RUNTIME
    assert "__gc metamethods are not allowed" in str(error)


def test_setmetatable_still_works_without_a_finalizer():
    source = (
        "local t = setmetatable({}, {__index = function(_, k) return k .. '!' end})\nreturn t.hi"
    )
    assert run_script(source, {}) == "hi!"


def test_each_run_starts_from_a_fresh_runtime():
    run_script("leaked = 1 string.upper = nil", {})
    assert run_script("return {leaked == nil, string.upper('a')}", {}) == [True, "A"]


# Limits


def test_an_infinite_loop_stops_at_the_instruction_budget_quickly():
    error, elapsed = timed_failure("while true do end")
    assert error.kind == ErrorKind.INSTRUCTIONS
    assert str(error) == "script exceeded its instruction budget of 10,000,000 instructions"
    assert elapsed < 2


def test_the_instruction_budget_is_configurable():
    error = failure("while true do end", instruction_limit=5000)
    assert str(error) == "script exceeded its instruction budget of 5,000 instructions"
    source = "local x = 0 for i = 1, 100 do x = x + i end return x"
    assert run_script(source, {}, instruction_limit=5000) == 5050


@pytest.mark.parametrize(
    "source",
    [
        "while true do pcall(function() while true do end end) end",
        "while true do pcall(error) end",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
        "local ok = pcall(function() while true do end end) return 'escaped'",
        "while true do string.gsub('x', 'x', function() pcall(function() while true do end end) end) end",
        "xpcall(error, function() while true do end end)",
        "while true do xpcall(error, function() return pcall(function() while true do end end) end) end",
        "local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end",
    ],
)
def test_catching_the_budget_error_does_not_let_a_script_run_on(source):
    error, elapsed = timed_failure(source)
    assert error.kind == ErrorKind.INSTRUCTIONS
    assert elapsed < 2


@pytest.mark.parametrize(
    "source",
    [
        "return #string.rep('', 1e18)",
        "return #('').rep('', 1e18, '')",
        "local t = {} table.move(t, 1, 1e18, 2) return 1",
        "local t = setmetatable({}, {__len = function() return 1e17 end}) table.insert(t, 1, 'x')",
        "local t = setmetatable({}, {__len = function() return 1e17 end}) table.remove(t, 1)",
    ],
)
def test_library_loops_in_c_pay_for_their_iterations(source):
    error, elapsed = timed_failure(source)
    assert error.kind == ErrorKind.INSTRUCTIONS
    assert elapsed < 2


def test_ordinary_table_functions_are_not_charged_for_appending():
    source = "local t = {} for i = 1, 10000 do table.insert(t, i) end table.remove(t) return #t"
    # Charged for #t on each call, these 10,000 appends would cost 50,000,000 instructions.
    assert run_script(source, {}, instruction_limit=2_000_000) == 9999


def test_the_time_limit_stops_a_loop_with_a_large_budget():
    error, elapsed = timed_failure(
        "while true do end", instruction_limit=1_000_000_000, time_limit=0.2
    )
    assert error.kind == ErrorKind.TIME
    assert str(error) == "script exceeded its time limit of 0.2s"
    assert elapsed < 1


def test_a_script_stuck_in_the_pattern_matcher_is_abandoned_at_the_deadline_and_then_ends():
    # "a*b" backtracks quadratically in C, where the hook never runs (about 2s here).
    error, elapsed = timed_failure(
        "return string.find(string.rep('a', 20000), 'a*b')", time_limit=0.2
    )
    assert error.kind == ErrorKind.TIME
    assert elapsed < 1
    for thread in [t for t in threading.enumerate() if t.name == "furrow-lua"]:
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_setting_cancel_stops_a_running_script():
    cancel = threading.Event()
    with pytest.raises(ScriptError) as excinfo:
        run_script(
            "print('started') while true do end",
            {},
            instruction_limit=1_000_000_000,
            log=lambda stream, text: cancel.set(),
            cancel=cancel,
        )
    assert excinfo.value.kind == ErrorKind.CANCELLED


@pytest.mark.parametrize(
    "source",
    [
        "local t = {} while true do t[#t + 1] = string.rep('x', 1e6) end",
        "local s = 'x' while true do s = s .. s end",
        "local t = {} for i = 1, 1e9 do t[i] = {} end",
        "local t = {} while true do pcall(function() t[#t + 1] = string.rep('x', 1e6) end) end",
        "return string.rep('x', 2^30)",
    ],
)
def test_unbounded_allocation_stops_at_the_memory_limit(source):
    error = failure(source, memory_limit=16 * 2**20, instruction_limit=1_000_000_000)
    assert error.kind == ErrorKind.MEMORY
    assert str(error) == "script exceeded its memory limit of 16 MB"
    assert run_script("return #string.rep('x', 1000)", {}) == 1000


def test_an_input_larger_than_the_memory_limit_is_refused():
    error = failure("return 1", {"blob": "x" * (2 * 2**20)}, memory_limit=2**20)
    assert error.kind == ErrorKind.MEMORY
    assert str(error) == "the input does not fit in the script's memory limit of 1 MB"
    many = failure("return 1", {"rows": [{"n": i} for i in range(100_000)]}, memory_limit=2**20)
    assert many.kind == ErrorKind.MEMORY


def test_the_memory_limit_bounds_the_worker_process():
    code = textwrap.dedent(
        """
        import resource
        from steps.lua import run_script, ScriptError
        source = "local t = {} while true do t[#t + 1] = string.rep('x', 1e6) end"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            run_script(source, {}, memory_limit=32 * 2**20)
        except ScriptError as exc:
            print(exc.kind)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    kind, grown_mb = done.stdout.split()
    assert kind == "memory"
    assert int(grown_mb) < 32 + 16


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"instruction_limit": 0}, "instruction_limit"),
        ({"instruction_limit": 1_000_000_001}, "instruction_limit"),
        ({"memory_limit": 1000}, "memory_limit"),
        ({"memory_limit": 513 * 2**20}, "memory_limit"),
    ],
)
def test_limits_out_of_range_are_a_programming_error(limits, message):
    with pytest.raises(ValueError, match=message):
        run_script("return 1", {}, **limits)


# Errors


def test_a_syntax_error_names_its_line():
    error = failure("local a = 1\nlocal b = 2\nlocal c = = 3")
    assert error.kind == ErrorKind.SYNTAX
    assert str(error) == "syntax error at line 3: unexpected symbol near '='"


def test_a_runtime_error_names_its_line():
    error = failure("local a = 1\n\nreturn x.y")
    assert error.kind == ErrorKind.RUNTIME
    assert str(error) == "script error at line 3: attempt to index a nil value (global 'x')"


def test_an_error_about_an_input_local_names_the_local():
    error = failure("return customer.name", {"customer": None})
    assert str(error) == "script error at line 1: attempt to index a nil value (local 'customer')"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("error('boom')", "script error at line 1: boom"),
        ("error('boom', 0)", "script error: boom"),
        ("error({code = 1})", "script error: (error object is a table value)"),
        ("error(42, 0)", "script error: 42"),
        ("local s = string.rep('x', 2^40)", "script error at line 1: resulting string too large"),
        ("return string.rep('x', 2^40)", "script error: resulting string too large"),
        ("local s = ('x'):rep()", "script error at line 1: bad argument #2 to 'rep'"),
        ("table.insert(1, 2)", "script error at line 1: bad argument #1 to 'insert'"),
        ("setmetatable(1, {})", "script error at line 1: bad argument #1 to 'setmetatable'"),
        (
            "print(setmetatable({}, {__tostring = function() return {} end}))",
            "script error at line 1: '__tostring' must return a string",
        ),
    ],
)
def test_error_values_read_well(source, message):
    assert message in str(failure(source))


def test_unbounded_recursion_ends_with_an_error():
    assert failure("local function f() return 1 + f() end return f()").kind == ErrorKind.MEMORY
    big = failure("local function f() return 1 + f() end return f()", memory_limit=512 * 2**20)
    assert str(big) == "script error at line 1: stack overflow"


# print


def test_print_sends_each_line_to_the_log_sink():
    lines: list[tuple[str, str]] = []
    run_script(
        "print('hello', 1, nil, true) print('two\\nlines') print()",
        {},
        log=lambda stream, text: lines.append((stream, text)),
    )
    assert lines == [
        ("stdout", "hello\t1\tnil\ttrue"),
        ("stdout", "two"),
        ("stdout", "lines"),
        ("stdout", ""),
    ]


def test_print_without_a_sink_is_silent():
    assert run_script("print('nobody listens') return 1", {}) == 1


def test_printed_output_is_capped():
    lines: list[tuple[str, str]] = []
    run_script(
        "for i = 1, 30 do print(string.rep('x', 100000)) end",
        {},
        log=lambda stream, text: lines.append((stream, text)),
    )
    assert sum(len(text) for stream, text in lines if stream == "stdout") == MAX_PRINT_BYTES
    assert lines[-1][0] == "system"


def test_a_failing_log_sink_does_not_reach_the_script():
    def broken(stream: str, text: str) -> None:
        raise RuntimeError("log store is down")

    assert run_script("local ok = pcall(print, 'x') return ok", {}, log=broken) is True


# Predicates

CONTEXT = {"input": {"status": "active", "amount": 120}, "steps": {"fetch": {"output": {"n": 3}}}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('input.status == "active"', True),
        ("return input.amount > 100", True),
        ("steps.fetch.output.n < 3", False),
        ("_G.input.amount == 120", True),
        ("local n = steps.fetch.output.n\nreturn n == 3", True),
        ("item == nil", True),
    ],
)
def test_a_predicate_is_an_expression_or_a_chunk_that_returns_a_boolean(source, expected):
    assert evaluate_predicate(source, CONTEXT) is expected


@pytest.mark.parametrize(
    ("source", "type_name"),
    [("input.amount", "number"), ("input.status", "string"), ("input", "table"), ("x = 1", "nil")],
)
def test_a_predicate_that_does_not_return_a_boolean_is_an_error(source, type_name):
    with pytest.raises(ScriptError) as excinfo:
        evaluate_predicate(source, CONTEXT)
    assert excinfo.value.kind == ErrorKind.RESULT
    assert str(excinfo.value) == f"a when predicate must return a boolean, got {type_name}"


def test_a_predicate_has_the_same_limits():
    with pytest.raises(ScriptError) as excinfo:
        evaluate_predicate("while true do end", {}, instruction_limit=10_000)
    assert excinfo.value.kind == ErrorKind.INSTRUCTIONS


def test_a_predicate_with_a_syntax_error_reports_it():
    with pytest.raises(ScriptError) as excinfo:
        evaluate_predicate("input.status ==", CONTEXT)
    assert excinfo.value.kind == ErrorKind.SYNTAX


# check_syntax


def test_check_syntax_accepts_a_valid_script_without_running_it():
    assert check_syntax("while true do end") is None
    assert check_syntax("error('would fail')") is None


def test_check_syntax_reports_the_error_with_its_line():
    message = check_syntax("local x = 1\nif x then")
    assert message == "syntax error at line 2: 'end' expected near <eof>"


def test_check_syntax_for_a_predicate_accepts_a_bare_expression():
    assert check_syntax('status == "active"') is not None
    assert check_syntax('status == "active"', predicate=True) is None
    assert check_syntax("return status == 1", predicate=True) is None


def test_precompiled_bytecode_is_refused():
    assert check_syntax("\x1bLua") == "syntax error: attempt to load a binary chunk (mode is 't')"
