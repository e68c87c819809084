"""Parse: spec text -> ``nodes.Spec`` (Lark LALR, positions kept), with friendly syntax errors."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path
from typing import Any

from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from moraleval.errors import Diagnostic, MoralevalError, SpecSyntaxError
from moraleval.errors.source import Source, Span
from moraleval.language import nodes as n
from moraleval.language.grammar import WORD, GluedKeyword, lark_parser
from moraleval.language.syntax_errors import KEYWORD_TYPOS, syntax_diagnostic
from moraleval.util import safeio
from moraleval.util.text import did_you_mean

ROLE_NAMES = {"human": "user", "assistant": "assistant", "system": "system"}
#: the value types a ``fields`` line may name (besides ``none``: absent or null)
FIELD_TYPES = ("text", "int", "number", "bool", "list", "record", "any")

def _span(meta_or_token: Any) -> Span:
    if isinstance(meta_or_token, Token):
        return Span(meta_or_token.line, meta_or_token.column, meta_or_token.end_line, meta_or_token.end_column)
    return Span.from_meta(meta_or_token)


def unquote(token: Token) -> str:
    """A string token's text, escapes decoded; a bad escape or a NUL byte is a located syntax error."""
    text = str(token)
    if "\0" in text:
        line, column = _offset_position(token, text.index("\0"))
        raise _Fail("a string cannot contain a NUL byte", Span(line, column),
                    "remove it (a NUL byte usually means the file is binary or was corrupted)")
    try:
        with warnings.catch_warnings():  # an unknown escape such as \q stays as written (as in Python), silently
            warnings.simplefilter("ignore")
            return _decode(text)
    except (SyntaxError, ValueError, MemoryError) as exc:
        raise _bad_escape(token, text, exc) from None


def _decode(text: str) -> str:
    if text.startswith('"""'):
        body = text[3:-3]
        # a triple-quoted block may start with a newline for readability; it is not part of the text
        if body.startswith("\n"):
            body = body[1:]
        return ast.literal_eval('"""' + body.replace('"""', '\\"\\"\\"') + '"""') if "\\" in body else body
    return ast.literal_eval(text)


_ESCAPE = re.compile(r"\\(?:N\{[^}\n]*\}?|u[0-9A-Fa-f]{0,4}|U[0-9A-Fa-f]{0,8}|x[0-9A-Fa-f]{0,2}|.)", re.S)


def _bad_escape(token: Token, text: str, exc: Exception) -> "_Fail":
    """Point at the first escape Python cannot decode (``\\u12``, ``\\x4``, ``\\N{nosuch}``)."""
    reason = str(getattr(exc, "msg", exc) or exc)
    reason = re.sub(r"^\(unicode error\) 'unicodeescape' codec can't decode bytes in position \d+(-\d+)?: ", "",
                    reason)
    offset = 0
    for m in _ESCAPE.finditer(text):
        try:
            ast.literal_eval('"' + m.group(0) + '"')
        except (SyntaxError, ValueError):
            offset = m.start()
            break
    line, column = _offset_position(token, offset)
    return _Fail(f"invalid escape in a string: {reason}", Span(line, column),
                 "write \\\\ for a backslash; \\uXXXX needs 4 hex digits, \\xXX 2, \\N{...} a Unicode name")


def _offset_position(token: Token, offset: int) -> tuple[int, int]:
    """(line, column) of character ``offset`` of a token's text."""
    text = str(token)[:offset]
    newlines = text.count("\n")
    if newlines:
        return token.line + newlines, offset - text.rfind("\n")
    return token.line, token.column + offset


class _Fail(Exception):
    def __init__(self, message: str, span: Span, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.span, self.hint = message, span, hint


def _number(tok: Token) -> int | float:
    text = str(tok)
    if "." in text or "e" in text or "E" in text:
        return float(text)
    try:
        return int(text)
    except ValueError:  # longer than Python's int-from-text limit (4300 digits)
        raise _Fail(f"number with {len(text)} digits is too long", _span(tok)) from None


def _int(tok: Token, what: str) -> int:
    value = _number(tok)
    if not isinstance(value, int):
        raise _Fail(f"{what} must be a whole number, not {tok}", _span(tok))
    return value


@v_args(meta=True)
class _ToNodes(Transformer):
    """Lark tree -> frozen attrs nodes; every node keeps its span."""

    # ------------------------------------------------------------ expressions
    def number(self, meta, c):
        return n.Literal(_number(c[0]), span=_span(meta))

    def string(self, meta, c):
        return n.Literal(unquote(c[0]), span=_span(meta))

    def true(self, meta, c):
        return n.Literal(True, span=_span(meta))

    def false(self, meta, c):
        return n.Literal(False, span=_span(meta))

    def none(self, meta, c):
        return n.Literal(None, span=_span(meta))

    def name(self, meta, c):
        return n.Name(str(c[0]), span=_span(meta))

    def attribute(self, meta, c):
        return n.Attribute(c[0], str(c[1]), span=_span(meta))

    def index(self, meta, c):
        return n.Index(c[0], c[1], span=_span(meta))

    def call(self, meta, c):
        func, args, where = c
        return n.Call(str(func), tuple(args or ()), where, span=_span(meta))

    def call_args(self, meta, c):
        return list(c)

    def model_call(self, meta, c):
        func, response, rhs, where = c
        return n.Call(str(func), (n.Formula(response, rhs, span=_span(meta)),), where, span=_span(meta))

    def random_group(self, meta, c):
        return n.RandomGroup(c[0], str(c[1]), span=_span(meta))

    def neg_op(self, meta, c):
        if isinstance(c[0], n.Literal) and isinstance(c[0].value, (int, float)) and not isinstance(c[0].value, bool):
            return n.Literal(-c[0].value, span=_span(meta))
        return n.Unary("-", c[0], span=_span(meta))

    def not_op(self, meta, c):
        return n.Unary("not", c[0], span=_span(meta))

    def binary_op(self, meta, c):
        return n.Binary(str(c[1]), c[0], c[2], span=_span(meta))

    def compare_op(self, meta, c):
        return n.Compare(str(c[1]), c[0], c[2], span=_span(meta))

    def in_op(self, meta, c):
        return n.Compare("in", c[0], c[1], span=_span(meta))

    def not_in_op(self, meta, c):
        return n.Compare("not in", c[0], c[1], span=_span(meta))

    def and_op(self, meta, c):
        return n.BoolOp("and", c[0], c[1], span=_span(meta))

    def or_op(self, meta, c):
        return n.BoolOp("or", c[0], c[1], span=_span(meta))

    def if_else(self, meta, c):
        return n.IfElse(c[0], c[1], c[2], span=_span(meta))

    def list_expr(self, meta, c):
        return n.ListExpr(tuple(x for x in c if x is not None), span=_span(meta))

    def comprehension(self, meta, c):
        elt, var, iterable, cond = c
        return n.Comprehension(elt, str(var), iterable, cond, span=_span(meta))

    # ------------------------------------------------------------ top level
    def start(self, meta, c):
        return list(c)

    def version(self, meta, c):
        return n.Version(_int(c[0], "the version"), span=_span(meta))

    def study(self, meta, c):
        return n.Study(unquote(c[0]), span=_span(meta))

    def import_(self, meta, c):
        return n.Import(unquote(c[0]), span=_span(meta))

    def param(self, meta, c):
        return n.Param(str(c[0]), c[1], span=_span(meta))

    def let(self, meta, c):
        return n.Let(str(c[0]), c[1], span=_span(meta))

    def requires(self, meta, c):
        return n.Requires(tuple(c), span=_span(meta))

    def require_param(self, meta, c):
        return ("param", str(c[0]))

    def require_let(self, meta, c):
        return ("let", str(c[0]))

    def require_task(self, meta, c):
        return ("task", str(c[0]))

    def require_dataset(self, meta, c):
        return ("dataset", str(c[0]))

    def require_template(self, meta, c):
        return ("template", str(c[0]))

    def data_root(self, meta, c):
        return n.DataRoot(unquote(c[0]), span=_span(meta))

    def template(self, meta, c):
        return n.Template(str(c[0]), unquote(c[1]), text_span=_text_span(c[1]), span=_span(meta))

    # ------------------------------------------------------------ datasets
    def dataset(self, meta, c):
        return n.Dataset(str(c[0]), tuple(c[1:]), span=_span(meta))

    def origin(self, meta, c):
        return n.Origin(str(c[0]), unquote(c[1]), unquote(c[2]) if c[2] is not None else None, span=_span(meta))

    def file(self, meta, c):
        sha = c[1]  # the hash's text, or None for `unpinned`
        return n.FileDecl(unquote(c[0]), sha.lower() if sha is not None else None,
                          unquote(c[2]) if c[2] is not None else None, span=_span(meta))

    def file_sha(self, meta, c):
        return unquote(c[0])

    def file_unpinned(self, meta, c):
        return None

    def fields(self, meta, c):
        return n.Fields(tuple(c), span=_span(meta))

    def field_decl(self, meta, c):
        name, *types = c
        return n.FieldDecl(str(name), tuple(types), span=_span(meta))

    def field_type(self, meta, c):
        word, inner = c
        for w in (word, inner):
            if w is not None and str(w) not in FIELD_TYPES:
                raise _Fail(f"unknown field type '{w}'", _span(w),
                            did_you_mean(str(w), FIELD_TYPES) or "types: " + ", ".join(FIELD_TYPES) + ", none")
        if inner is not None and str(word) != "list":
            raise _Fail(f"'{word} of {inner}': only a list has element types", _span(word),
                        f"write 'list of {inner}'")
        return f"list of {inner}" if inner is not None else str(word)

    def field_none(self, meta, c):
        return "none"

    def expect(self, meta, c):
        return n.Expect(c[0], unquote(c[1]) if c[1] is not None else None, span=_span(meta))

    def read(self, meta, c):
        fmt, path, var, iterable = c
        return n.Read(str(fmt), unquote(path), str(var) if var is not None else None, iterable, span=_span(meta))

    def join_key(self, meta, c):
        left, right = c
        if right is None:
            return (str(left), str(left))
        return (str(left), unquote(right) if right.type == "STRING" else str(right))

    def if_present(self, meta, c):
        return True

    def join(self, meta, c):
        name, fmt, path, *rest = c
        optional = rest[-1] is True
        keys = tuple(k for k in rest[:-1])
        return n.Join(str(name), str(fmt), unquote(path), keys, optional, span=_span(meta))

    def derive(self, meta, c):
        return n.Derive(str(c[0]), c[1], span=_span(meta))

    def filter(self, meta, c):
        return n.Filter(c[0], unquote(c[1]) if c[1] is not None else None, span=_span(meta))

    def drop(self, meta, c):
        return n.DropEntries(str(c[0]), c[1], unquote(c[2]) if c[2] is not None else None, span=_span(meta))

    def name_list(self, meta, c):
        return tuple(str(x) for x in c)

    def sample(self, meta, c):
        size, per, seed = c
        if size.type == "NAME":
            return n.Sample(0, per or (), _int(seed, "the seed"), n.Name(str(size), span=_span(size)),
                            span=_span(meta))
        count = _int(size, "the sample size")
        return n.Sample(count, per or (), _int(seed, "the seed"), span=_span(meta))

    def expand(self, meta, c):
        return n.Expand(str(c[0]), c[1], span=_span(meta))

    # ------------------------------------------------------------ tasks
    def task(self, meta, c):
        name, dataset, *body = c
        fmt = None
        lets, conditions, choose = [], [], None
        for stmt in body:
            if isinstance(stmt, _Format):
                fmt = stmt.value
            elif isinstance(stmt, n.Let):
                lets.append(stmt)
            elif isinstance(stmt, n.Condition):
                conditions.append(stmt)
            elif isinstance(stmt, n.Choose):
                if choose is not None:
                    raise _Fail("a task has one 'choose' line", stmt.span,
                                "keep one at task level, or override it inside a condition")
                choose = stmt
        return n.Task(str(name), str(dataset), fmt, tuple(lets), tuple(conditions), choose, span=_span(meta))

    def format(self, meta, c):
        return _Format(str(c[0]))

    def each(self, meta, c):
        return n.Each(str(c[0]), c[1], span=_span(meta))

    def family(self, meta, c):
        return n.Each(str(c[0]), c[1], c[2], span=_span(meta), ranked=c[4] is not None,
                      other=str(c[3]) if c[3] is not None else None)

    def other_side(self, meta, c):
        return c[0]

    def ranked(self, meta, c):
        return True

    def condition(self, meta, c):
        name, each, extends, *body = c
        lets = tuple(s for s in body if isinstance(s, n.Let))
        turns = tuple(s for s in body if isinstance(s, n.Turn))
        chooses = [s for s in body if isinstance(s, n.Choose)]
        if len(chooses) > 1:
            raise _Fail("a condition has at most one 'choose' line", chooses[1].span)
        return n.Condition(str(name), str(extends) if extends is not None else None, lets, turns,
                           chooses[0] if chooses else None, span=_span(meta), each=each)

    def _turn(self, role, meta, c):
        content, gen = c
        return n.Turn(role, content, gen, span=_span(meta))

    def human_turn(self, meta, c):
        return self._turn("user", meta, c)

    def assistant_turn(self, meta, c):
        return self._turn("assistant", meta, c)

    def system_turn(self, meta, c):
        return self._turn("system", meta, c)

    def gen_max_tokens(self, meta, c):
        return ("max_tokens", _int(c[0], "max_tokens"), _span(meta))

    def gen_seed(self, meta, c):
        return ("seed", _int(c[0], "seed"), _span(meta))

    def gen_temperature(self, meta, c):
        return ("temperature", float(_number(c[0])), _span(meta))

    def gen_top_p(self, meta, c):
        return ("top_p", float(_number(c[0])), _span(meta))

    def gen_stop(self, meta, c):
        return ("stop", unquote(c[0]), _span(meta))

    def generate(self, meta, c):
        name, *options = c
        kw: dict[str, Any] = {}
        stops: list[str] = []
        for key, value, span in options:
            if key == "stop":
                stops.append(value)
            elif key in kw:
                raise _Fail(f"'{key}' is given twice", span)
            else:
                kw[key] = value
        return n.GenerateSpec(str(name), stop=tuple(stops), span=_span(meta), **kw)

    def choose(self, meta, c):
        name, options, values, scoring, norm, rotate = c
        return n.Choose(str(name), options, values, str(scoring) if scoring else "logprob",
                        str(norm) if norm else "softmax", tuple(rotate or ()), span=_span(meta))

    # ------------------------------------------------------------ statistics
    def metric_params(self, meta, c):
        return tuple(str(x) for x in c)

    def metric(self, meta, c):
        name, params, task, each, value, correction = c
        return n.Metric(str(name), params or (), value, str(task) if task is not None else None, span=_span(meta),
                        each=each, correction=str(correction) if correction is not None else None)

    def item_def(self, meta, c):
        name, params, task, value = c
        return n.ItemDef(str(name), params or (), value, str(task) if task is not None else None, span=_span(meta))

    def boot_resamples(self, meta, c):
        return ("resamples", _int(c[0], "resamples"))

    def boot_seed(self, meta, c):
        return ("seed", _int(c[0], "seed"))

    def boot_level(self, meta, c):
        return ("level", float(_number(c[0])))

    def boot_unit(self, meta, c):
        return ("unit", c[0])

    def boot_method(self, meta, c):
        return ("method", str(c[0]))

    def bootstrap(self, meta, c):
        task, *options = c
        kw = {"task": str(task)} if task is not None else {}
        for key, value in options:
            if key in kw:
                raise _Fail(f"bootstrap option '{key}' is given twice", _span(meta))
            kw[key] = value
        return n.Bootstrap(span=_span(meta), **kw)

    def pair(self, meta, c):
        return (str(c[0]), str(c[1]))

    def compare(self, meta, c):
        models, *pairs, metrics, test, margin, correction = c
        return n.Comparison(tuple(pairs), metrics, str(test) if test else "bootstrap",
                            str(correction) if correction else "holm", span=_span(meta), models=models is not None,
                            margin=margin)

    def margin(self, meta, c):
        tok = c[0]
        return str(tok) if tok.type == "NAME" else float(_number(tok))

    def compare_models(self, meta, c):
        return True

    def report(self, meta, c):
        return n.Report(c[0], span=_span(meta))

    def setting(self, meta, c):
        return (str(c[0]), c[1])

    def run_settings(self, meta, c):
        return n.RunSettings(tuple(c), span=_span(meta))

    def model(self, meta, c):
        default, name, backend, *settings, about = c
        return n.Model(str(name), str(backend), tuple(settings), default is not None, span=_span(meta),
                       about=about or ())

    def about(self, meta, c):
        return tuple(c)

    def model_set(self, meta, c):
        default, name, *members, axis = c
        axis_name, scale = axis if axis is not None else (None, None)
        return n.ModelSet(str(name), tuple(str(m) for m in members if m is not None), axis_name,
                          scale or "linear", default is not None, span=_span(meta))

    def set_axis(self, meta, c):
        return (str(c[0]), str(c[1]) if c[1] is not None else None)


class _Format:
    def __init__(self, value: str) -> None:
        self.value = value


def _text_span(token: Token) -> Span:
    """Where a string's text starts: line/column of its first character (after the quotes)."""
    text = str(token)
    if text.startswith('"""'):
        body = text[3:]
        if body.startswith("\n"):
            return Span(token.line + 1, 1)
        return Span(token.line, token.column + 3)
    return Span(token.line, token.column + 1)


def parse(source: Source) -> n.Spec:
    """Parse one spec file (imports are resolved by the checker)."""
    try:
        tree = lark_parser().parse(source.text)
    except UnexpectedInput as exc:
        raise SpecSyntaxError([syntax_diagnostic(exc, source)]) from None
    except GluedKeyword as exc:
        word = str(exc.keyword) + source.text[exc.rest.start_pos:].split(None, 1)[0]
        word = WORD.match(word).group(0)
        hint = (f"did you mean '{KEYWORD_TYPOS[word]}'?" if word in KEYWORD_TYPOS
                else f"'{exc.keyword}' is a keyword; put a space after it if '{word}' was meant as two words")
        raise SpecSyntaxError([Diagnostic(f"unexpected '{word}'", Span(exc.keyword.line, exc.keyword.column,
                                                                       exc.keyword.line,
                                                                       exc.keyword.column + len(word)),
                                          source, hint, code="E001")]) from None
    too_deep = _too_deep(tree)
    if too_deep is not None:
        raise SpecSyntaxError([Diagnostic(f"expression nested deeper than {MAX_NESTING} levels", too_deep, source,
                                          "split it with 'let' definitions", code="E003")])
    try:
        body = _ToNodes().transform(tree)
    except VisitError as exc:
        inner = exc.orig_exc
        if isinstance(inner, _Fail):
            raise SpecSyntaxError([Diagnostic(inner.message, inner.span, source, inner.hint, code="E002")]) from None
        raise
    return n.Spec(source.path, tuple(body), span=Span(1, 1))


# Every later stage walks expressions recursively; past this depth of grammar rules (a real spec stays under
# 20) a spec is refused up front instead of exhausting Python's stack somewhere downstream.
MAX_NESTING = 100


def _too_deep(tree) -> Span | None:
    """Where the parse tree first gets deeper than MAX_NESTING (iterative: the tree may be deeper than the stack)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            meta = getattr(node, "meta", None)
            if meta is not None and not getattr(meta, "empty", True):
                return Span(meta.line, meta.column)
            if isinstance(node, Token):
                return Span(node.line, node.column)
            return Span(1, 1)
        for child in getattr(node, "children", ()):
            if child is not None and not isinstance(child, Token):
                stack.append((child, depth + 1))
    return None


def parse_text(text: str, path: str = "<string>") -> n.Spec:
    return parse(Source(text, path))


def parse_file(path: str | Path) -> n.Spec:
    return parse(read_source(path))


def read_source(path: str | Path) -> Source:
    """A spec file's text, every problem reading it one clear sentence."""
    try:
        return Source(safeio.read_text(Path(path)), str(path))
    except safeio.FileProblem as exc:
        raise MoralevalError(f"spec file '{path}' {exc.reason}", hint=exc.hint) from None


def parse_expression(text: str) -> n.Expr:
    """Parse a single expression (used by `--set` and tests)."""
    spec = parse_text(f"let _ = {text}")
    return spec.body[0].value
