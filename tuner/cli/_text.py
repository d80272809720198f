"""User text on the terminal: shown as text, its invisible characters escaped, never obeyed.

A job's name, task, error, optimizer names or a path come from whoever submitted the job or
typed the command. Printed raw, ``"x\\x1b[31mred"`` would recolour (or with other sequences
retitle, clear or rewrite) the terminal of whoever lists the jobs; read by Rich as markup,
``[bold]`` would vanish and ``mypkg.loop:train:`` would end in an emoji. So user text goes to
Rich as :class:`rich.text.Text` (:func:`as_text`, never parsed for markup or emoji codes), and
its control and invisible characters are written as escapes (:func:`printable`). The CLI's
consoles are built with ``emoji=False``: markup is only for our own strings.

Example:
    >>> printable("x\\x1b[31mred")
    'x\\\\x1b[31mred'
    >>> as_text("mypkg.loop:train").plain
    'mypkg.loop:train'
"""

from __future__ import annotations

import re
import unicodedata

from rich.markup import escape
from rich.style import StyleType
from rich.text import Text

__all__ = ["as_text", "printable", "shown"]

#: Unicode categories written as escapes: controls (C0, DEL, C1 such as the 8-bit CSI 0x9b),
#: format characters (the invisible ones: zero-width space, joiners, word joiner, soft
#: hyphen, BOM, the bidirectional overrides and isolates of "Trojan Source", CVE-2021-42574,
#: tag characters), the line and paragraph separators, and lone surrogates (not even UTF-8).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: What is certainly printable (ASCII letters, digits, punctuation, space): the fast path.
_PLAIN = re.compile(r"[\x20-\x7e]*")


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _line(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value
    return "".join(_escaped(c) if unicodedata.category(c) in _ESCAPED_CATEGORIES else c
                   for c in value)


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or invisible character written as an escape (``\\x1b``,
    ``\\n``, ``\\u200b``)."""
    value = str(text)
    if keep_newlines:
        return "\n".join(_line(line) for line in value.split("\n"))
    return _line(value)


def shown(text: object) -> str:
    """``text`` ready to sit inside our own Rich markup: control and invisible characters
    escaped, and ``[`` not read as a tag. Rich still reads ``:name:`` as an emoji in markup
    unless the console has ``emoji=False`` (the CLI's have): :func:`as_text` is safe anywhere."""
    return escape(printable(text))


def as_text(text: object, style: StyleType = "", *, keep_newlines: bool = False) -> Text:
    """``text`` as a :class:`rich.text.Text`: printed as it is written, whatever console
    prints it (no markup, no emoji codes), its invisible characters escaped."""
    return Text(printable(text, keep_newlines=keep_newlines), style=style)
