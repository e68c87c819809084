"""Text for messages: a suggestion for a misspelt name, a long path cut to a readable length, and any text from
disk made safe to print on a terminal."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["did_you_mean", "for_terminal", "json_for_terminal", "shorten"]

# C0 and C1 control characters and DEL: a name holding ESC [ ... can move the cursor, erase a line or retitle the
# window, so a report folder's file names could rewrite what `verify` prints.  Line and paragraph separators and
# the bidirectional overrides (which reorder what is shown, "Trojan Source") are written as escapes too.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                             0x200E, 0x200F, 0x061C)})
_KEEP_NEWLINES = {k: v for k, v in _CONTROL.items() if k not in (0x0A, 0x09)}
# in JSON text (where C0 controls are escaped already and the rest can only sit inside strings): \uNNNN escapes
_JSON = {k: f"\\u{k:04x}" for k in _CONTROL if k >= 0x7F}


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """"did you mean 'a' or 'b'?" naming the (at most three) candidates closest in spelling; None when none is
    close enough to be a likely typo."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def shorten(text: str, limit: int = 80) -> str:
    """A path as shown in a message: a 300-character name is cut in the middle."""
    return text if len(text) <= limit else text[: limit // 2 - 1] + "…" + text[-(limit // 2):]


def for_terminal(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as ``\\xNN`` (and line separators and bidirectional
    controls as ``\\uNNNN``), so that text from a file or a folder someone sent prints as itself and cannot
    move the cursor, erase lines or reorder what is shown.  ``keep_newlines`` leaves ``\\n`` and tabs alone (a
    multi-line message of moraleval's own, a source line quoted in a diagnostic)."""
    return str(text).translate(_KEEP_NEWLINES if keep_newlines else _CONTROL)


def json_for_terminal(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the characters a terminal acts on that JSON leaves
    raw (DEL, C1 controls, line separators, bidirectional controls) written as ``\\uNNNN`` escapes: the same
    JSON value, safe to print."""
    return text.translate(_JSON)
