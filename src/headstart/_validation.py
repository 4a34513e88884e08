"""One message shape for invalid parameters, as in scikit-learn."""

from __future__ import annotations

from typing import Any

from headstart.errors import ConfigError


def invalid(owner: str, name: str, requirement: str, value: Any) -> ConfigError:
    """Build the error for a parameter that breaks its requirement."""
    return ConfigError(
        f"The {name!r} parameter of {owner} must be {requirement}. Got {value!r} instead."
    )
