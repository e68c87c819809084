"""Friendly syntax errors: what Lark reports, turned into a located diagnostic a person can act on ("unexpected
'}'", "the block opened at 4:1 is not closed", "did you mean 'metric'?")."""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from moraleval.errors import Diagnostic
from moraleval.errors.source import Source, Span
from moraleval.language.grammar import WORD, display, statement_keywords, suggest

# What a person would call each terminal, for "expected ..." messages.
_TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LBRACE": "'{'", "RBRACE": "'}'",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "EQUAL": "'='", "COMMA": "','",
    "COLON": "':'", "DOT": "'.'", "FORMAT": "a file format (jsonl, csv, tsv)",
    "DIALOGUE": "chat, text or raw", "ORIGIN_KIND": "github, huggingface or url",
    "CMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '%'",
    "$END": "the end of the file",
}


def _describe(token: Token | None) -> str:
    if token is None or token.type == "$END":
        return "the end of the file"
    return f"'{token}'"


def _expected(accepts: set[str]) -> str:
    names = sorted({display(a, _TOKEN_NAMES) for a in accepts if a})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def syntax_diagnostic(exc: UnexpectedInput, source: Source) -> Diagnostic:
    line = getattr(exc, "line", 1) or 1
    column = getattr(exc, "column", 1) or 1
    hint = None
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else ""
        message = f"unexpected character {char!r}"
        if char == "'":
            hint = "strings use double quotes: \"...\""
        elif char == '"':
            hint = "a string is not closed on this line (use \"\"\"...\"\"\" for text over several lines)"
    elif isinstance(exc, UnexpectedEOF):
        message = "the file ends in the middle of a statement"
        hint = f"expected {_expected(set(exc.expected))}"
        lines = source.text.splitlines() or [""]
        line, column = len(lines), max(1, len(lines[-1]))
    else:
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        expected = set(exc.accepts or exc.expected)
        if tok.type == "$END":
            message = "the file ends in the middle of a statement"
            lines = source.text.splitlines() or [""]
            line, column = len(lines), max(1, len(lines[-1]))
        else:
            message = f"unexpected {_describe(tok)}"
        hint = f"expected {_expected(expected)}"
        near = suggest(str(tok), expected) if WORD.fullmatch(str(tok)) else None
        if near is not None:
            hint = f"did you mean '{near}'?"
        elif "RBRACE" in expected and tok.type != "RBRACE" and (tok.type == "$END"
                                                                or str(tok) in statement_keywords()):
            # a statement that belongs at the top level, inside a block: most likely a '}' is missing
            opened = _open_brace(source.text, tok.start_pos if tok.start_pos is not None else len(source.text))
            where = f"the block opened at {opened[0]}:{opened[1]} is not closed" if opened else "is a '}' missing?"
            hint += f" ({where})"
        typo = _keyword_typo(source, tok)
        if typo is not None:
            word, keyword, line, column = typo
            message = f"unknown statement '{word}'"
            hint = f"did you mean '{keyword}'?"
        if "EQUAL" in expected and tok.type == "COLON":
            hint = "use '=' here, not ':'"
    return Diagnostic(message, Span(line, column), source, hint, code="E001")


_SKIP = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*', re.S)


def _open_brace(text: str, end: int) -> tuple[int, int] | None:
    """(line, column) of the innermost '{' still open at ``end`` (strings and comments skipped)."""
    stack: list[int] = []
    i = 0
    while i < end:
        m = _SKIP.match(text, i)
        if m:
            i = m.end()
            continue
        if text[i] == "{":
            stack.append(i)
        elif text[i] == "}" and stack:
            stack.pop()
        i += 1
    if not stack:
        return None
    pos = stack[-1]
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _keyword_typo(source: Source, tok: Token) -> tuple[str, str, int, int] | None:
    """(word, keyword, line, column) when the statement at the error starts with a misspelt keyword.

    The contextual lexer splits a word that starts with a keyword ('metrics' -> 'metric' 's'), so the error
    token is often the word after the typo: look at the first word of the error's line as well.
    """
    if tok.type == "NAME" and str(tok) in KEYWORD_TYPOS:
        return str(tok), KEYWORD_TYPOS[str(tok)], tok.line, tok.column
    text = source.line_text(tok.line)
    m = re.match(r"\s*([A-Za-z_]\w*)", text)
    if m and m.group(1) in KEYWORD_TYPOS and m.end(1) <= tok.column:
        return m.group(1), KEYWORD_TYPOS[m.group(1)], tok.line, m.start(1) + 1
    return None


KEYWORD_TYPOS = {
    "metrics": "metric", "datasets": "dataset", "templates": "template", "conditions": "condition",
    "derived": "derive", "filters": "filter", "choice": "choose", "user": "human", "params": "param",
    "tasks": "task", "compares": "compare", "imports": "import",
}


