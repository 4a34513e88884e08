"""The curated public API: every exported name resolves, the lazy exports cannot be
shadowed, importing costs no deep-learning stack, and the errors form one hierarchy."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import headstart
import headstart.errors

PACKAGES = [
    "headstart",
    *sorted(
        f"headstart.{info.name}"
        for info in pkgutil.iter_modules(headstart.__path__)
        if info.ispkg and not info.name.startswith("_")
    ),
]
HEAVY = ("torch", "timm", "matplotlib")


def run_fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (nothing imported yet) and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(headstart.__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_packages_are_the_ones_expected():
    """A new subpackage must be added here on purpose (and get an ``__all__``)."""
    assert PACKAGES == [
        "headstart",
        "headstart.active",
        "headstart.backbones",
        "headstart.cli",
        "headstart.data",
        "headstart.estimator",
        "headstart.evaluation",
        "headstart.export",
        "headstart.features",
        "headstart.job",
        "headstart.parallel",
        "headstart.rank",
        "headstart.serve",
        "headstart.strategies",
        "headstart.tracking",
        "headstart.train",
    ]


def test_every_exported_name_resolves_in_a_fresh_process():
    """Each name in each ``__all__`` resolves from a clean start, through the lazy
    exports, to the object its defining module holds: a stale entry in an export map
    fails here even when some other test happened to import the module first."""
    found = run_fresh(
        f"""
import importlib, json
failures = []
for package in {PACKAGES!r}:
    module = importlib.import_module(package)
    exports = getattr(module, "_EXPORTS", {{}})
    for name in module.__all__:
        try:
            value = getattr(module, name)
        except Exception as error:
            failures.append(f"{{package}}.{{name}}: {{error!r}}")
            continue
        if name in exports:
            source = importlib.import_module(exports[name], package)
            if getattr(source, name) is not value:
                failures.append(f"{{package}}.{{name}} is not {{exports[name]}}.{{name}}")
        if name not in dir(module):
            failures.append(f"{{package}}.{{name}} missing from dir()")
print(json.dumps(failures))
"""
    )
    assert found == []


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_each_name_once_and_nothing_private(package):
    names = importlib.import_module(package).__all__
    assert len(set(names)) == len(names)
    assert not [n for n in names if n.startswith("_") and n != "__version__"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_lazy_export_is_named_like_a_submodule(package):
    """``import headstart.data.split`` sets the attribute ``split`` on the package, which
    would shadow a lazily exported ``split``: the export would then be the module."""
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    exported = set(getattr(module, "_EXPORTS", {})) | set(module.__all__)
    assert not exported & submodules


@pytest.mark.parametrize(
    "code",
    [
        "import headstart",
        "import headstart.cli; headstart.cli.build_parser()",
        "import sys; sys.argv = ['headstart', '--help']\n"
        "from headstart.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "build_parser", "--help"],
)
def test_importing_and_the_cli_parser_cost_no_deep_learning_stack(code):
    loaded = run_fresh(
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    assert loaded == []


def test_every_exported_error_is_a_headstart_error():
    errors = {
        name: value
        for package in PACKAGES
        for name, value in vars(importlib.import_module(package)).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    errors |= {
        name: getattr(headstart, name)
        for name in headstart.__all__
        if inspect.isclass(getattr(headstart, name))
        and issubclass(getattr(headstart, name), BaseException)
    }
    defined = {
        name: value
        for name, value in vars(headstart.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert set(defined) == set(headstart.errors.__all__)  # every error is exported there
    assert set(defined) <= set(errors)  # and from the top-level package
    for name, error in errors.items():
        assert issubclass(error, headstart.HeadstartError), name
        assert error.__module__ == "headstart.errors", name


def test_the_cli_parser_costs_no_numpy_either():
    """NumPy alone doubled `headstart --help` (0.045 -> 0.09 s) when a validation helper
    imported it; the parser needs nothing numeric."""
    loaded = run_fresh(
        "import headstart.cli; headstart.cli.build_parser()\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy')))"
    )
    assert loaded == []
