"""One message shape for invalid parameters, as in scikit-learn."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from headstart.errors import ConfigError

# Feature layer names besides "final": stage<i> counts from the input, stage-<j> from the end.
LAYER_PATTERN = re.compile(r"stage(0|[1-9][0-9]*|-[1-9][0-9]*)", re.ASCII)

# A layer pooled over a g x g grid instead of globally: "final_2x2", "stage-1_3x3".
GRID_SUFFIX = re.compile(r"_([1-4])x\1", re.ASCII)


def split_layer(layer: str) -> tuple[str, int]:
    """(base layer, grid side): "stage-1_2x2" -> ("stage-1", 2); "final" -> ("final", 1).
    The base is returned as given, unchecked; a suffix that is not a grid stays on it."""
    match = GRID_SUFFIX.search(layer)
    if match is None or match.end() != len(layer):
        return layer, 1
    return layer[: match.start()], int(match.group(1))


def is_layer_name(layer: object) -> bool:
    """Whether ``layer`` is spelled as a feature layer ("final", "stage2", "stage-1",
    each optionally with a grid suffix such as "_2x2"), whatever the model."""
    if not isinstance(layer, str):
        return False
    base, _ = split_layer(layer)
    return base == "final" or LAYER_PATTERN.fullmatch(base) is not None


# The input resolution a model may be asked for, in pixels per side. Below 16 px the
# strided stages of a CNN leave nothing to pool. Above 2048 px no backbone has been
# trained (timm's largest pretrained inputs are 800 px), and the cost grows with the
# square: one batch of 32 images at 2048 px is already 1.6 GB of input in float32,
# while 100,000 px asked for 240 GB before the bound was there.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 2048
IMAGE_SIZE_RANGE = f"an int from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (pixels per side)"


def image_size_fits(value: object) -> bool:
    """Whether ``value`` is an image size in the accepted range (one rule for the
    training config and for ``create_backbone``)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE
    )


def invalid(
    owner: str, name: str, requirement: str, value: Any, *, hint: str | None = None
) -> ConfigError:
    """Build the error for a parameter that breaks its requirement (it names the
    parameter, so a face can word it as its own flag)."""
    return ConfigError(
        f"The {name!r} parameter of {owner} must be {requirement}. Got {value!r} instead.",
        hint=hint,
        parameter=name,
        requirement=requirement,
        value=value,
    )


def is_int(value: Any) -> bool:
    """An int (NumPy's too: they register as ``numbers.Integral``), never a bool: ``True``
    is not a batch size. No NumPy import here: the command line's start-up reads this."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or float that is neither a bool, NaN nor infinite (a learning rate of
    ``inf`` would train nothing but NaNs, long after the call that took it)."""
    is_number = isinstance(value, numbers.Real)  # NumPy's numbers too; its bool is not
    return is_number and not isinstance(value, bool) and math.isfinite(value)


def check_int(owner: str, name: str, value: Any, low: int = 1) -> None:
    """Raise ``invalid(...)`` unless ``value`` is an int >= ``low``."""
    validate(owner, {name: Interval(numbers.Integral, low, None)}, {name: value})


def check_finite(owner: str, name: str, value: Any, low: float | None = None) -> None:
    """Raise ``invalid(...)`` unless ``value`` is a finite number (>= ``low`` when given)."""
    if not is_finite_number(value) or (low is not None and value < low):
        requirement = "a finite number" + (f" >= {low:g}" if low is not None else "")
        raise invalid(owner, name, requirement, value)


# Checks as data (scikit-learn's ``_parameter_constraints``): a settings class states each
# parameter's requirement once, in a table, and ``validate`` produces the messages. A
# table entry is one constraint or a tuple of them, checked in order (the first one a
# value breaks words the error: "a finite number" before "in [0, 1)").


class Constraint:
    """One requirement on a value, which knows its own wording."""

    description = "a valid value"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def violation(self, value: Any) -> tuple[str, Any] | None:
        """(requirement, offending value) when ``value`` breaks this, else None."""
        return None if self.accepts(value) else (self.description, value)

    def bad_value(self) -> Any:
        """A representative value this constraint rejects (for the table-walking test)."""
        return object()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


_KIND_WORDS = {int: "an int ", numbers.Integral: "an int ", numbers.Real: ""}


class Interval(Constraint):
    """A number between ``low`` and ``high`` (None: unbounded). ``kind`` int: a built-in
    int, never a bool; ``numbers.Integral``: NumPy's ints too; ``numbers.Real``: any
    number (put ``Finite()`` before it to word NaN and strings apart, or pass
    ``finite=True`` to reject them as out of range: "a number > 0"). ``closed`` says
    which bounds belong: "left", "right", "both" or "neither"."""

    def __init__(
        self,
        kind: type,
        low: float | None,
        high: float | None,
        closed: str = "left",
        *,
        finite: bool = False,
    ) -> None:
        if kind not in _KIND_WORDS or closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"Interval({kind!r}, closed={closed!r}) is not supported")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.finite = finite
        self.description = self._describe()

    def _describe(self) -> str:
        words = "a number " if self.finite and self.kind is numbers.Real else _KIND_WORDS[self.kind]
        left = self.closed in ("left", "both")
        right = self.closed in ("right", "both")
        if self.low is None and self.high is None:
            return words.strip()
        if self.high is None:
            return f"{words}{'>=' if left else '>'} {self.low:g}"
        if self.low is None:
            return f"{words}{'<=' if right else '<'} {self.high:g}"
        brackets = ("[" if left else "(") + f"{self.low:g}, {self.high:g}" + ("]" if right else ")")
        return f"{words}in {brackets}"

    def _is_kind(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            return isinstance(value, int)
        return isinstance(value, self.kind)

    def accepts(self, value: Any) -> bool:
        if not self._is_kind(value) or (self.finite and not is_finite_number(value)):
            return False
        left = self.closed in ("left", "both")
        right = self.closed in ("right", "both")
        if self.low is not None and not (value >= self.low if left else value > self.low):
            return False
        return self.high is None or (value <= self.high if right else value < self.high)

    def bad_value(self) -> Any:
        if self.low is not None:
            return self.low - 1 if self.kind is not numbers.Real else self.low - 0.5
        if self.high is not None:
            return self.high + 1
        return "1"


class Finite(Constraint):
    """An int or float that is neither a bool, NaN nor infinite."""

    description = "a finite number"

    def accepts(self, value: Any) -> bool:
        return is_finite_number(value)

    def bad_value(self) -> Any:
        return float("nan")


class Options(Constraint):
    """One of a few values, worded as their tuple: "one of ('cosine', 'onecycle')"."""

    def __init__(self, options: tuple[Any, ...]) -> None:
        self.options = tuple(options)
        self.description = f"one of {self.options}"

    def accepts(self, value: Any) -> bool:
        return value in self.options

    def bad_value(self) -> Any:
        return "not-an-option"


class Optional(Constraint):
    """``inner`` or None; worded "<inner> or None" unless ``description`` says otherwise."""

    def __init__(self, inner: Constraint, description: str | None = None) -> None:
        self.inner = inner
        self.description = description or f"{inner.description} or None"

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def bad_value(self) -> Any:
        return self.inner.bad_value()


class Satisfies(Constraint):
    """A rule no other constraint spells, given as a predicate and its wording."""

    def __init__(self, predicate: Any, description: str, bad: Any) -> None:
        self.predicate, self.description, self.bad = predicate, description, bad

    def accepts(self, value: Any) -> bool:
        return bool(self.predicate(value))

    def bad_value(self) -> Any:
        return self.bad


class LayerNames(Constraint):
    """A non-empty tuple of feature layer names; a misspelt name is reported alone."""

    description = "one or more layer names, e.g. final or stage-2,final"
    each = "names such as 'final', 'stage4', 'stage-1' or 'final_2x2'"

    def accepts(self, value: Any) -> bool:
        return self.violation(value) is None

    def violation(self, value: Any) -> tuple[str, Any] | None:
        if not isinstance(value, tuple) or not value:
            return self.description, value
        for layer in value:
            if not is_layer_name(layer):
                return self.each, layer
        return None

    def bad_value(self) -> Any:
        return ("stage_x",)


class Items(Constraint):
    """A non-empty tuple or list whose items each meet ``inner``. An empty or non-sequence
    value is worded ``description``; a bad item is reported alone, worded ``each``, when
    that is given (else the whole value is, worded ``description``)."""

    def __init__(self, inner: Constraint, description: str, *, each: str | None = None) -> None:
        self.inner, self.description, self.each = inner, description, each

    def accepts(self, value: Any) -> bool:
        return self.violation(value) is None

    def violation(self, value: Any) -> tuple[str, Any] | None:
        if not isinstance(value, tuple | list) or not value:
            return self.description, value
        for item in value:
            if not self.inner.accepts(item):
                return (self.each, item) if self.each else (self.description, value)
        return None

    def bad_value(self) -> Any:
        return ()


Constraints = dict[str, "Constraint | tuple[Constraint, ...]"]


def validate(owner: str, constraints: Constraints, values: Any) -> None:
    """Raise ``invalid(owner, name, ...)`` for the first parameter in ``constraints``
    whose value (``values[name]``, or the attribute of an object) breaks its entry."""
    for name, entry in constraints.items():
        value = values[name] if isinstance(values, dict) else getattr(values, name)
        for constraint in entry if isinstance(entry, tuple) else (entry,):
            broken = constraint.violation(value)
            if broken is not None:
                raise invalid(owner, name, broken[0], broken[1])


# A built-in int >= 1, never a bool (a count, a size, a batch): the most common entry.
POSITIVE_INT = Interval(int, 1, None)


def positive_int(owner: str, name: str, value: Any, kind: type = int) -> None:
    """Raise ``invalid(owner, name, "an int >= 1", value)`` unless ``value`` is one
    (``kind`` ``numbers.Integral`` lets NumPy's ints through too)."""
    constraint = POSITIVE_INT if kind is int else Interval(kind, 1, None)
    validate(owner, {name: constraint}, {name: value})


def check_flag(flag: str, constraint: Constraint, value: Any) -> None:
    """The command line's wording of a broken constraint, for a flag the faces check
    before any library call: "--batch-size must be an int >= 1. Got 0 instead."."""
    broken = constraint.violation(value)
    if broken is not None:
        raise ConfigError(f"{flag} must be {broken[0]}. Got {broken[1]} instead.")
