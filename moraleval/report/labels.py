"""Labels of metric expressions: the source text that the pages, the figures' axes and the sample browser show for
a formula stored as expression JSON in report.json; and any text from data, a spec or report.json made safe for
report.md (``text_for_markdown``, ``code_for_markdown``)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from moraleval.language import exprjson

__all__ = ["MarkdownCode", "code_for_markdown", "expr_source", "text_for_markdown"]


def expr_source(e: Mapping[str, Any]) -> str:
    """The expression as the spec would write it; its JSON when it cannot be read back (an expression from a
    newer or hand-edited report.json): only a label, never an error."""
    try:
        return exprjson.to_source(exprjson.from_json(dict(e)))
    except Exception:  # noqa: BLE001 - only a label
        return json.dumps(e, sort_keys=True)


# What could turn text into markup in a Markdown previewer, and only that (so "p < 0.001" and "a -> b" read as
# they are): a `<` that starts a tag, comment or autolink (`<img onerror=...>`, `<javascript:...>`), a `>` closing
# one, an `&` starting an entity, a backtick (a code span swallowing what follows), `](` (a link or a remote image,
# `![x](https://tracker/...)`), `$` (math in GitHub's and other previews: a price tier "$$" would vanish), a
# backslash that would undo one of these escapes, `|` (a table cell) and line breaks (one value is one cell or
# one line).
_MD_ACTIVE = re.compile(r"\\(?=[!-/:-@\[-`{-~])|<(?=[A-Za-z/!?])|(?<=[A-Za-z0-9\"'/])>|&(?=[A-Za-z#])|`|\$|\](?=\()|\||"
                        r"\r\n|[\n\r\u2028\u2029\x85]")
_MD_REPLACE = {"\\": "\\\\", "<": "&lt;", ">": "&gt;", "&": "&amp;", "`": "\\`", "$": "\\$", "]": "\\]",
               "|": "\\|"}


class MarkdownCode(str):
    """Markdown already made safe (a code span): written as it is."""


def text_for_markdown(value: Any) -> Any:
    """A string as Markdown text that shows exactly it (see ``_MD_ACTIVE``); other values unchanged."""
    if not isinstance(value, str) or isinstance(value, MarkdownCode):
        return value
    return _MD_ACTIVE.sub(lambda m: _MD_REPLACE.get(m.group(0), " "), value)


def code_for_markdown(value: Any) -> MarkdownCode:
    """``value`` as one inline code span: its text is shown verbatim (HTML in a code span is text), fenced by one
    more backtick than the longest run of backticks in it, on one line, with ``|`` escaped for a table cell."""
    text = re.sub(r"\r\n|[\n\r\u2028\u2029\x85]", " ", str(value)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return MarkdownCode(f"{fence}{pad}{text}{pad}{fence}")
