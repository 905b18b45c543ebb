"""Masking secret values in text and JSON-like values: no database, milliseconds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steps.secrets import MASK, Masker, mask


def test_a_secret_inside_a_string_is_replaced_wherever_it_occurs():
    assert mask("token=s3cr3t; again s3cr3t", ["s3cr3t"]) == "token=***; again ***"


def test_nested_dicts_and_lists_are_masked_and_the_input_is_left_alone():
    value = {"a": ["x s3cr3t", {"b": "s3cr3t"}], "c": ("s3cr3t",), "d": "plain"}

    masked = mask(value, ["s3cr3t"])

    assert masked == {"a": ["x ***", {"b": "***"}], "c": ("***",), "d": "plain"}
    assert value["a"][1]["b"] == "s3cr3t"


def test_dict_keys_are_masked_too():
    assert mask({"s3cr3t": 1, "k-s3cr3t": {"s3cr3t": 2}}, ["s3cr3t"]) == {
        "***": 1,
        "k-***": {"***": 2},
    }


def test_the_longest_secret_wins_where_secrets_overlap():
    # Shorter first would leave "***-extended": half of the longer secret in clear.
    assert mask("use token-extended", ["token", "token-extended"]) == "use ***"
    assert mask("token and token-extended", ["token-extended", "token"]) == "*** and ***"


def test_non_strings_are_returned_as_they_are():
    value = {"n": 5, "f": 1.5, "t": True, "none": None}

    assert mask(value, ["s3cr3t"]) == value
    assert mask(7, ["s3cr3t"]) == 7


def test_a_number_whose_digits_are_a_secret_becomes_a_masked_string():
    # Over-masking changes the type; leaking a PIN through a parsed JSON number would be worse.
    assert mask({"pin": 1234, "other": 99}, ["1234"]) == {"pin": "***", "other": 99}


def test_empty_secret_values_are_ignored():
    assert mask("abc", ["", "b" * 5]) == "abc"


def test_short_secrets_are_masked_even_though_they_over_mask():
    assert mask("a1 b a1", ["a1"]) == "*** b ***"


def test_each_line_of_a_multi_line_secret_is_masked_on_its_own():
    # Logs arrive line by line, so a PEM key never appears whole in one log line.
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----"

    assert mask("line: AAAAbbbbCCCC", [key]) == "line: ***"
    assert mask(f"all:\n{key}\n", [key]) == "all:\n***\n"


def test_the_json_escaped_form_of_a_secret_is_masked():
    assert mask('{"password": "p\\"w0rd!"}', ['p"w0rd!']) == '{"password": "***"}'


def test_a_masker_without_secrets_returns_its_input_unchanged():
    masker = Masker([])
    value = {"a": ["b"]}

    assert not masker
    assert masker.value(value) is value
    assert masker.text("abc") == "abc"


def test_a_masker_is_built_once_and_reused():
    masker = Masker(["hunter22", "s3cr3t"])

    assert masker
    assert masker.text("hunter22/s3cr3t") == "***/***"
    assert masker.value(["s3cr3t"]) == ["***"]


SECRET_CHARS = st.characters(blacklist_characters="*", blacklist_categories=("Cs",))
secret_values = st.text(SECRET_CHARS, min_size=4, max_size=12)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [*strings_in(key), *strings_in(item)]]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [str(value)] if isinstance(value, int) and not isinstance(value, bool) else []


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(secret_values, min_size=1, max_size=4),
    value=json_like,
    data=st.data(),
)
def test_a_masked_value_never_contains_a_secret(secrets, value, data):
    # Plant the secrets inside strings so most examples have something to hide.
    planted = [value, *(f"x{s}{data.draw(st.sampled_from(secrets))}y" for s in secrets)]

    masked = mask(planted, secrets)

    for text in strings_in(masked):
        for secret in secrets:
            assert secret not in text


@settings(max_examples=200, deadline=None)
@given(secrets=st.lists(secret_values, max_size=4), text=st.text(max_size=60))
def test_masking_twice_changes_nothing_more(secrets, text):
    once = mask(text, secrets)

    assert mask(once, secrets) == once
    assert (MASK in once) or once == text
