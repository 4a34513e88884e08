"""House rules that a reader notices only when they are broken."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"
MAX_FUNCTION_LINES = 100
# Being split on another branch of issue 20; drop the entry once that is merged.
KNOWN_LONG = {"serve/app.py:create_app"}


def long_functions(root: Path, limit: int) -> list[str]:
    """``path:name (lines)`` of every function or method under ``root`` longer than ``limit``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root).as_posix()}:{node.name} ({lines})")
    return found


def test_no_function_in_src_is_over_100_lines() -> None:
    too_long = [
        entry
        for entry in long_functions(SRC, MAX_FUNCTION_LINES)
        if entry.split(" ")[0] not in KNOWN_LONG
    ]
    assert too_long == [], "split these into named steps: " + ", ".join(too_long)


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == [
        f"long.py:long ({MAX_FUNCTION_LINES + 1})"
    ]
