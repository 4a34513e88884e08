"""The curated public API: everything in __all__ exists, nothing private leaks."""

from __future__ import annotations

import headstart


def test_all_names_exist_once():
    for name in headstart.__all__:
        assert hasattr(headstart, name), name
    assert len(set(headstart.__all__)) == len(headstart.__all__)


def test_no_private_names_are_exported():
    assert not [n for n in headstart.__all__ if n.startswith("_") and n != "__version__"]


def test_errors_form_one_hierarchy():
    for name in ("ConfigError", "DataError", "WeightsError", "NotFittedError", "TrainingError"):
        assert issubclass(getattr(headstart, name), headstart.HeadstartError)
