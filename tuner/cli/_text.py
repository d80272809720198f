"""User text on the terminal: control characters shown escaped, never obeyed.

A job's name, task, error or optimizer names come from whoever submitted the job. Printed raw,
``"x\\x1b[31mred"`` would recolour (or with other sequences retitle, clear or rewrite) the
terminal of whoever lists the jobs. :func:`shown` is what the CLI prints for such text.

Example:
    >>> printable("x\\x1b[31mred")
    'x\\\\x1b[31mred'
"""

from __future__ import annotations

import re

from rich.markup import escape

__all__ = ["printable", "shown"]

# C0 controls and DEL, C1 controls (0x80-0x9f, e.g. the 8-bit CSI 0x9b), and the Unicode
# bidirectional overrides and isolates that reorder what is shown ("Trojan Source",
# CVE-2021-42574), plus the line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``)."""
    value = str(text)
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_escaped, line) for line in value.split("\n"))
    return _CONTROL.sub(_escaped, value)


def shown(text: object) -> str:
    """``text`` ready for Rich: control characters escaped, and ``[`` not read as markup."""
    return escape(printable(text))
