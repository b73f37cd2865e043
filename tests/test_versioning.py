"""Version strings: which names are versions, and in which order they sort.

The registry does not build a ``semver.Version`` per folder name; it has its own validator and sort
key. These tests hold it to the ``semver`` package, the reference the SPEC names. The one deliberate
difference: versions longer than ``MAX_VERSION_LENGTH`` (128) characters are refused, since a version
is also a folder name. (Older ``semver`` releases also accepted non-ASCII digits such as ``١``, which
we always refuse; the ``semver`` installed here refuses them too, see the explicit test below.)
"""

from __future__ import annotations

import functools
from random import Random

import pytest
import semver
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_model_registry import InvalidVersionError, RegistryError
from flask_model_registry.versioning import MAX_VERSION_LENGTH, check_version, sort_key

# Strategies -----------------------------------------------------------------------------------------

numbers = st.sampled_from(["0", "1", "2", "9", "10", "11", "123"])
pre_ids = st.sampled_from(["alpha", "beta", "rc", "0", "1", "2", "11", "a1", "1a", "-", "x-y", "0a"])
build_ids = st.sampled_from(["001", "b", "exp", "sha", "5114f85", "-"])


def _dotted(ids: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(ids, min_size=1, max_size=3).map(".".join)


@st.composite
def versions(draw: st.DrawFn) -> str:
    """Valid SemVer strings, drawn from few parts so that equal and close versions are common."""
    text = ".".join(draw(numbers) for _ in range(3))
    if draw(st.booleans()):
        text += "-" + draw(_dotted(pre_ids))
    if draw(st.booleans()):
        text += "+" + draw(_dotted(build_ids))
    return text


#: Pieces of almost-valid versions: leading zeros, empty or odd identifiers, separators in odd places.
near_misses = st.lists(
    st.sampled_from(
        ["0", "1", "01", "00", "10", ".", "..", "-", "+", "a", "Z", "-rc", "_", " ", "v", "\n", "١", "ß"]
    ),
    max_size=12,
).map("".join)


def semver_is_valid(text: str) -> bool:
    """The reference, with our one documented difference: a length limit."""
    return semver.Version.is_valid(text) and len(text) <= MAX_VERSION_LENGTH


def reference_order(a: str, b: str) -> int:
    """SemVer precedence, then the string itself for versions that differ only in build metadata."""
    return semver.Version.parse(a).compare(b) or (a > b) - (a < b)


# Properties -----------------------------------------------------------------------------------------

#: The same examples on every run (a failure is reproducible), and no per-example deadline on a busy CI.
examples = settings(derandomize=True, deadline=None, max_examples=300)


@examples
@given(st.one_of(versions(), near_misses, st.text(max_size=40), st.from_regex(r"\A[0-9.+a-z-]{1,16}\Z")))
def test_validity_agrees_with_semver(text: str) -> None:
    assert (sort_key(text) is not None) == semver_is_valid(text)


@examples
@given(st.one_of(versions(), near_misses, st.text(max_size=40)))
def test_check_version_accepts_exactly_the_valid_versions(text: str) -> None:
    if semver_is_valid(text):
        assert check_version(text) == text
    else:
        with pytest.raises(InvalidVersionError):
            check_version(text)


@examples
@given(versions(), versions())
def test_order_agrees_with_semver_precedence_and_breaks_ties_by_the_string(a: str, b: str) -> None:
    key_a, key_b = sort_key(a), sort_key(b)
    assert key_a is not None and key_b is not None
    assert (key_a > key_b) - (key_a < key_b) == reference_order(a, b)


@examples
@given(st.lists(versions(), unique=True, min_size=2, max_size=12), st.randoms())
def test_order_is_total_and_does_not_depend_on_the_input_order(names: list[str], random: Random) -> None:
    shuffled = list(names)
    random.shuffle(shuffled)
    expected = sorted(names, key=functools.cmp_to_key(reference_order))
    assert sorted(shuffled, key=sort_key) == sorted(names, key=sort_key) == expected


# Explicit cases ---------------------------------------------------------------------------------------


def test_numbers_compare_as_numbers() -> None:
    assert sort_key("1.9.0") < sort_key("1.10.0")
    assert sort_key("1.0.0-rc.2") < sort_key("1.0.0-rc.10")


def test_the_semver_spec_example_order() -> None:
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    assert sorted(reversed(chain), key=sort_key) == chain


def test_build_metadata_only_breaks_ties() -> None:
    assert sorted(["1.0.0+b", "1.0.0-rc.1", "1.0.0+a", "1.0.0"], key=sort_key) == [
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.0+a",
        "1.0.0+b",
    ]
    assert sort_key("1.0.0+zzz") < sort_key("1.0.1+aaa")


@pytest.mark.parametrize(
    "text",
    [
        "..",
        "1.0",
        "v1.0.0",
        "1.0.0/..",
        "1.0.0\x00",
        "../1.0.0",
        "1.0.0\\x",
        "1.0.0\n",
        " 1.0.0",
        "01.0.0",
        "1.00.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-a..b",
        "١.٠.٠",  # Arabic-Indic digits: int() would read them, SemVer does not allow them
        "1.0.0-" + "a" * (MAX_VERSION_LENGTH - 5),  # one character over the limit
        "1." * 10_000 + "0",
    ],
)
def test_check_version_refuses(text: str) -> None:
    with pytest.raises(InvalidVersionError, match="not a valid version"):
        check_version(text)


@pytest.mark.parametrize("value", [None, 1, 1.0, b"1.0.0", ["1.0.0"], ("1", "0", "0")])
def test_check_version_refuses_what_is_not_a_string(value: object) -> None:
    with pytest.raises(InvalidVersionError, match="must be a string"):
        check_version(value)


def test_invalid_version_is_a_value_error_and_a_registry_error() -> None:
    with pytest.raises(ValueError):
        check_version("latest")
    assert issubclass(InvalidVersionError, RegistryError)


def test_the_longest_version_accepted() -> None:
    longest = "1.0.0-" + "a" * (MAX_VERSION_LENGTH - 6)
    assert len(longest) == MAX_VERSION_LENGTH
    assert check_version(longest) == longest
