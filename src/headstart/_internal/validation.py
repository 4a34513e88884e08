"""One message shape for invalid parameters, as in scikit-learn."""

from __future__ import annotations

import re
from typing import Any

from headstart.errors import ConfigError

# Feature layer names besides "final": stage<i> counts from the input, stage-<j> from the end.
LAYER_PATTERN = re.compile(r"stage(0|[1-9][0-9]*|-[1-9][0-9]*)", re.ASCII)


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
