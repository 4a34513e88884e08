"""Text for a terminal: file names are data, and data must not drive the terminal.

A file may be named ``a\\nb.png`` or carry ``\\x1b[31m``; printed raw, the first splits a
table row in two and the second recolours (or retitles, or clears) the user's terminal.
Every human-readable text that shows a name goes through :func:`printable`; JSON and
CSV outputs do not, since their formats escape on their own and must stay exact.
"""

from __future__ import annotations

import unicodedata

__all__ = ["first_line", "printable"]


def _escape(char: str) -> str:
    """The repr-style escape of one character: ``\\n``, ``\\x1b``, ``\\u2028``."""
    return repr(char)[1:-1] if char not in "'\"" else char


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1) and line/paragraph separators
    written as repr-style escapes; other characters, accents and CJK included, are kept.
    ``keep_newlines`` keeps ``\\n`` for a text whose own lines are meant (a report)."""
    out = []
    for char in str(text):
        if char == "\n" and keep_newlines:
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def first_line(error: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message: for
    quoting a third-party library's error (its later lines are stack details)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
