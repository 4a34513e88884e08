"""Checks as data: every public settings table rejects a bad value of each parameter
with a message naming the owner and the parameter, and accepts the defaults (as
scikit-learn's ``parametrize_with_checks`` walks every estimator)."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import pytest

from headstart._internal.validation import (
    Finite,
    Interval,
    Items,
    LayerNames,
    Optional,
    Options,
    check_int,
    positive_int,
    validate,
)
from headstart.errors import ConfigError
from headstart.evaluation.comparison import COMPARE_CONSTRAINTS, CompareSettings
from headstart.serve.limits import SERVE_LIMITS_CONSTRAINTS, ServeLimits
from headstart.train.config import TRAIN_CONSTRAINTS, TrainConfig

TABLES = [
    ("TrainConfig", TrainConfig, TRAIN_CONSTRAINTS),
    ("ServeLimits", ServeLimits, SERVE_LIMITS_CONSTRAINTS),
    ("CompareSettings", CompareSettings, COMPARE_CONSTRAINTS),
]

CASES = [
    (owner, cls, name, constraint)
    for owner, cls, table in TABLES
    for name, entry in table.items()
    for constraint in (entry if isinstance(entry, tuple) else (entry,))
]


@pytest.mark.parametrize(("owner", "cls", "table"), TABLES, ids=[t[0] for t in TABLES])
def test_each_table_names_real_fields_and_accepts_the_defaults(owner, cls, table):
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(table) <= names, sorted(set(table) - names)
    validate(owner, table, cls())  # the defaults pass their own table


@pytest.mark.parametrize(
    ("owner", "cls", "name", "constraint"),
    CASES,
    ids=[f"{c[0]}.{c[2]}-{type(c[3]).__name__}" for c in CASES],
)
def test_each_constraint_rejects_its_bad_value_naming_owner_and_parameter(
    owner, cls, name, constraint
):
    bad = constraint.bad_value()
    assert not constraint.accepts(bad)
    with pytest.raises(ConfigError) as caught:
        cls(**{name: bad})
    message = str(caught.value)
    assert message.startswith(f"The {name!r} parameter of {owner} must be ")
    assert caught.value.parameter == name


@pytest.mark.parametrize(
    ("constraint", "words"),
    [
        (Interval(int, 1, None), "an int >= 1"),
        (Interval(int, 0, None), "an int >= 0"),
        (Interval(int, None, None), "an int"),
        (Interval(numbers.Real, 0, 1, closed="left"), "in [0, 1)"),
        (Interval(numbers.Real, 0, 1, closed="right"), "in (0, 1]"),
        (Interval(numbers.Real, 0, None, closed="neither"), "> 0"),
        (Interval(numbers.Real, 0, None), ">= 0"),
        (Interval(numbers.Real, 0, None, closed="neither", finite=True), "a number > 0"),
        (Finite(), "a finite number"),
        (Options(("cosine", "onecycle")), "one of ('cosine', 'onecycle')"),
        (Optional(Interval(int, 1, None)), "an int >= 1 or None"),
    ],
)
def test_constraints_word_themselves_as_the_messages_always_did(constraint, words):
    assert constraint.description == words


def test_interval_bounds_and_kinds():
    positive = Interval(int, 1, None)
    assert positive.accepts(1) and not positive.accepts(0)
    assert not positive.accepts(True)  # a bool is not a count
    assert not positive.accepts(np.int64(3))  # torch's samplers refuse NumPy ints
    assert Interval(numbers.Integral, 1, None).accepts(np.int64(3))
    fraction = Interval(numbers.Real, 0, 1, closed="left")
    assert fraction.accepts(0) and fraction.accepts(0.5) and not fraction.accepts(1)
    assert not Interval(numbers.Real, 0, None, finite=True).accepts(math.inf)
    assert Interval(numbers.Real, 0, None).accepts(math.inf)  # finite=False: Finite() does it


def test_a_tuple_entry_words_the_first_check_broken():
    table = {"lr": (Finite(), Interval(numbers.Real, 0, None, closed="neither"))}
    with pytest.raises(ConfigError, match="must be a finite number. Got nan"):
        validate("X", table, {"lr": math.nan})
    with pytest.raises(ConfigError, match="must be > 0. Got 0 instead"):
        validate("X", table, {"lr": 0})
    validate("X", table, {"lr": 1e-3})


def test_items_and_layer_names_report_the_bad_item():
    sizes = Items(Optional(Interval(int, 1, None)), "at least one size", each="ints >= 1")
    assert sizes.violation((10, 0)) == ("ints >= 1", 0)
    assert sizes.violation(()) == ("at least one size", ())
    assert sizes.violation([10, None]) is None
    assert LayerNames().violation(("final", "stage_x"))[1] == "stage_x"
    assert LayerNames().violation([]) is not None


def test_the_helpers_keep_their_messages():
    with pytest.raises(ConfigError, match=r"'batch_size' parameter of f must be an int >= 1"):
        positive_int("f", "batch_size", 0)
    with pytest.raises(ConfigError, match=r"'n' parameter of f must be an int >= 2. Got 1"):
        check_int("f", "n", 1, low=2)
    check_int("f", "n", np.int64(2), low=2)  # NumPy's ints pass check_int, as before


def test_check_flag_words_a_broken_constraint_as_the_flag():
    from headstart._internal.validation import POSITIVE_INT, check_flag

    with pytest.raises(ConfigError) as caught:
        check_flag("--batch-size", POSITIVE_INT, 0)
    assert str(caught.value) == "--batch-size must be an int >= 1. Got 0 instead."
    check_flag("--batch-size", POSITIVE_INT, 8)
