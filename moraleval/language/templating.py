"""Jinja2 templates that cannot exhaust the machine, change the data, or reach outside the spec.

A spec (and so its templates) may come from someone you do not trust.  Templates render in a
``jinja2.sandbox.ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no method that mutates a list,
dict or set: ``{{ answer_info.clear() }}`` cannot change what another condition sees) with, on top:

* no loader: ``{% include %}``, ``{% import %}`` and ``{% extends %}`` are refused when the template is compiled;
* no constant folding at compile time (the compiler would otherwise evaluate ``'a' * 10**9`` while checking);
* size caps: a rendered prompt, and any string or list built on the way, is at most ``MAX_TEXT`` characters or
  items; an integer at most ``MAX_INT_BITS`` bits (``(10**100)**(10**100)`` is refused, not computed);
* step caps: loops, calls and attribute lookups check a per-render deadline (``TIME_LIMIT_S``) and a call depth
  (``MAX_CALL_DEPTH``, so a recursive macro stops), and a template nested deeper than ``MAX_NESTING`` brackets is
  refused before Jinja2's recursive parser sees it.

Every failure, whatever Python raised underneath (ZeroDivisionError, OverflowError, RecursionError, ...), comes out
as a ``TemplateFailure`` (a ``jinja2.TemplateError``) with a one-line reason and, where known, the template line.
"""

from __future__ import annotations

import math
import operator
import re
import threading
import time
from typing import Any, Callable, Iterable

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

MAX_TEXT = 1_000_000  # characters of one rendered prompt (or items of a list built by a template)
MAX_INT_BITS = 4096  # 10**1233: far beyond any count or index a prompt needs
MAX_CALL_DEPTH = 50  # nested macro / function calls
MAX_LOOP_STEPS = 1_000_000  # loop iterations in one render
MAX_NESTING = 30  # brackets inside one {{ }} / {% %}
MAX_OPERATORS = 100  # operators in one {{ }} / {% %}: Jinja2 parenthesises each
TIME_LIMIT_S = 5.0  # one template on one row


class TemplateFailure(jinja2.TemplateError):
    """A template failed to compile or render; ``reason`` is one line, ``lineno`` the template line if known."""

    def __init__(self, reason: str, lineno: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lineno = lineno

    def __str__(self) -> str:
        return self.reason


class _Budget(threading.local):
    """The running render's deadline, loop steps and call depth (per thread: Ray/threads may render in parallel)."""

    deadline: float = math.inf
    steps: int = 0
    depth: int = 0


_budget = _Budget()


def _tick() -> None:
    if time.monotonic() > _budget.deadline:
        raise TemplateFailure(f"the template took longer than {TIME_LIMIT_S:g} s to render (the limit per row)")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict, set)) and len(value) > MAX_TEXT:
        kind = "text" if isinstance(value, str) else "a collection"
        raise TemplateFailure(f"the template builds {kind} longer than {MAX_TEXT:,} (the limit)")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateFailure(f"the template builds an integer larger than 2**{MAX_INT_BITS} (the limit)")
    return value


def _length(x: Any) -> int | None:
    try:
        return len(x) if isinstance(x, (str, list, tuple)) else None
    except TypeError:  # pragma: no cover
        return None


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _refuse_big(*numbers: Any, what: str = "a size") -> None:
    for x in numbers:
        if isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) > MAX_TEXT:
            raise TemplateFailure(f"{what} of {x:.3g} is over the limit ({MAX_TEXT:,})")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def _check_printf(fmt: str, args: Any) -> None:
    star = False
    for m in _PRINTF.finditer(fmt):
        for g in m.groups():
            if g == "*":
                star = True
            elif g and int(g) > MAX_TEXT:
                raise TemplateFailure(f"a format width of {g} is over the limit ({MAX_TEXT:,})")
    if star:
        values = args if isinstance(args, tuple) else (args,)
        _refuse_big(*values, what="a format width")


def _check_format_spec(fmt: str, args: Iterable[Any]) -> None:
    """str.format: widths written in the text, and (when a width is itself a field) every numeric argument."""
    nested = False
    for m in _FORMAT_FIELD.finditer(fmt):
        field = m.group(0)
        if ":" in field:
            for digits in re.findall(r"\d+", field.split(":", 1)[1]):
                if int(digits) > MAX_TEXT:
                    raise TemplateFailure(f"a format width of {digits} is over the limit ({MAX_TEXT:,})")
        if field.count("{") > 1:
            nested = True
    if nested:
        _refuse_big(*args, what="a format width")


def _binop(op: str, left: Any, right: Any) -> Any:
    _tick()
    if op == "**":
        if _int(left) and _int(right) and right > 0 and abs(left) > 1:
            if right * max(1, abs(left).bit_length() - 1) > MAX_INT_BITS:
                raise TemplateFailure(f"{left:.3g} ** {right:.3g} is larger than 2**{MAX_INT_BITS} (the limit)")
        return _check_size(operator.pow(left, right))
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            n = _length(seq)
            if n is not None and _int(times) and n * times > MAX_TEXT:
                raise TemplateFailure(f"repeating something of length {n:,} {times:.3g} times is over the limit "
                                      f"({MAX_TEXT:,})")
        if _int(left) and _int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateFailure(f"the product is larger than 2**{MAX_INT_BITS} (the limit)")
        return _check_size(operator.mul(left, right))
    if op == "+":
        a, b = _length(left), _length(right)
        if a is not None and b is not None and a + b > MAX_TEXT:
            raise TemplateFailure(f"the template builds something longer than {MAX_TEXT:,} (the limit)")
        return _check_size(operator.add(left, right))
    if op == "%":
        if isinstance(left, str):
            _check_printf(left, right)
        return _check_size(operator.mod(left, right))
    raise AssertionError(op)  # pragma: no cover - only the intercepted operators reach here


def _guard_iter(iterable: Any) -> Iterable[Any]:
    """Every loop of a template runs through here: the deadline and the step cap apply to each iteration."""
    for x in iterable:
        _budget.steps += 1
        if _budget.steps > MAX_LOOP_STEPS:
            raise TemplateFailure(f"the template loops more than {MAX_LOOP_STEPS:,} times (the limit)")
        if not _budget.steps & 1023:
            _tick()
        yield x


# Filters whose numeric arguments set the size of their output.
_SIZE_FILTERS = {"center", "indent", "wordwrap", "truncate", "batch", "slice", "filesizeformat"}


def _guard_filter(name: str, func: Callable) -> Callable:
    pass_arg = jinja2.utils._PassArg.from_obj(func)

    def guarded(*args, **kwargs):
        _tick()
        values = args[1:] if pass_arg is not None else args  # a context/environment comes first
        if name in _SIZE_FILTERS:
            _refuse_big(*values[1:], *kwargs.values(), what=f"'{name}' with a size")
        if name == "wordwrap":
            width = kwargs.get("width", values[1] if len(values) > 1 else 79)
            if _int(width) and width < 1:
                raise TemplateFailure(f"wordwrap needs a width of at least 1, got {width}")
        if name == "format" and values and isinstance(values[0], str):
            _check_printf(values[0], tuple(values[1:]) or tuple(kwargs.values()))
        return _check_size(func(*args, **kwargs))

    guarded.__name__ = getattr(func, "__name__", name)
    if pass_arg is not None:
        guarded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return guarded


_SIZE_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
_DISALLOWED = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class SafeEnvironment(ImmutableSandboxedEnvironment):
    """The only environment spec templates compile and render in (see the module docstring)."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                         loader=None, optimized=False, cache_size=0)
        for name, func in list(self.filters.items()):
            self.filters[name] = _guard_filter(name, func)
        self.filters["_moraleval_iter"] = _guard_iter
        self.filters["_moraleval_size"] = _check_size
        self.globals.pop("lipsum", None)  # lipsum(n=10**6) writes megabytes of Latin; no prompt needs it

    # ------------------------------------------------------------ compile
    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(_DISALLOWED):
            what = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
                    nodes.Extends: "extends"}[type(node)]
            raise jinja2.TemplateSyntaxError(
                f"'{{% {what} %}}' is not available: a spec template cannot load other templates "
                "(define the shared text as a 'template NAME = ...' and use it as a turn, or use a macro)",
                node.lineno, name, filename)
        tree = _Guard().visit(tree)
        return tree

    # ------------------------------------------------------------ runtime hooks
    def call_binop(self, context, operator_: str, left: Any, right: Any) -> Any:
        return _binop(operator_, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja2's calling convention
        _tick()
        inner = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(inner, "__self__", None)
        if isinstance(owner, str):
            method = getattr(inner, "__name__", "")
            if method in _SIZE_METHODS:
                _refuse_big(*args, *kwargs.values(), what=f"'{method}' with a size")
            elif method in ("format", "format_map"):
                _check_format_spec(owner, [*args, *kwargs.values()]
                                   + (list(args[0].values()) if method == "format_map" and args
                                      and isinstance(args[0], dict) else []))
        if _budget.depth >= MAX_CALL_DEPTH:
            raise TemplateFailure(f"calls nested deeper than {MAX_CALL_DEPTH} (a macro that calls itself "
                                  "without end?)")
        _budget.depth += 1
        try:
            return _check_size(super().call(__context, __obj, *args, **kwargs))
        finally:
            _budget.depth -= 1


class _Guard(NodeTransformer):
    """Loops iterate through ``_moraleval_iter`` (deadline, step cap); ``~`` results pass ``_moraleval_size``."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_moraleval_iter", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_moraleval_size", [], [], None, None, lineno=node.lineno)


def make_environment() -> SafeEnvironment:
    return SafeEnvironment()


_BINARY = frozenset({"+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", "<=", ">", ">=", "|", "."})
_BRACKETS = {"lparen": 1, "lbracket": 1, "lbrace": 1, "rparen": -1, "rbracket": -1, "rbrace": -1}


def compile_template(env: SafeEnvironment, text: str) -> jinja2.Template:
    """Compile a spec template; too deep nesting and Jinja2's own recursion limits become syntax errors.

    Jinja2 compiles a template to Python source, parenthesising every operation, so a long chain such as
    ``1 + 1 + ... + 1`` becomes parentheses nested hundreds deep, which Python's compiler refuses with a
    ``SyntaxError`` (or, depending on the stack, Jinja2's code generator with a ``RecursionError``).  Both are
    refused here first, with the template's line, and caught below as a last resort.
    """
    if len(text) > MAX_NESTING:  # a shorter text cannot nest or chain past either limit
        _check_nesting(env, text)
    try:
        return env.from_string(text)
    except RecursionError:
        raise jinja2.TemplateSyntaxError(f"template expression nested too deeply (over {MAX_NESTING} levels)",
                                         1) from None
    except SyntaxError as exc:  # Python's compiler refused the code Jinja2 made: blocks or brackets nested too deep
        raise jinja2.TemplateSyntaxError(f"template nested too deeply for Python's compiler ({exc.msg}); "
                                         "flatten the nested blocks or split the expression with {% set %}",
                                         1) from None
    except (MemoryError, OverflowError, ValueError) as exc:
        raise jinja2.TemplateSyntaxError(f"template cannot be compiled: {exc}", 1) from None


def _check_nesting(env: SafeEnvironment, text: str) -> None:
    depth = 0
    unary = 0
    operators = 0
    try:
        tokens = list(env.lex(text))
    except jinja2.TemplateSyntaxError:
        return  # from_string reports it with its line
    for lineno, kind, value in tokens:
        if kind in ("variable_begin", "block_begin"):
            operators = 0
        elif (kind == "operator" and value in _BINARY) or (kind == "name" and value in ("and", "or", "in", "is")):
            operators += 1
            if operators > MAX_OPERATORS:
                raise jinja2.TemplateSyntaxError(f"template expression has more than {MAX_OPERATORS} operators; "
                                                 "split it with {% set %}", lineno)
        if kind == "operator":
            depth += _BRACKETS.get({"(": "lparen", "[": "lbracket", "{": "lbrace", ")": "rparen",
                                    "]": "rbracket", "}": "rbrace"}.get(value, ""), 0)
            unary = unary + 1 if value in ("-", "+") else 0
        elif kind == "name" and value == "not":
            unary += 1
        elif kind != "whitespace":
            unary = 0
        if depth > MAX_NESTING or unary > MAX_NESTING:
            raise jinja2.TemplateSyntaxError(f"template expression nested deeper than {MAX_NESTING} levels",
                                             lineno)


class Renderer:
    """A compiled template rendered with only the variables it uses, under the render budget."""

    def __init__(self, env: SafeEnvironment, template: jinja2.Template, text: str) -> None:
        self.environment = env
        self.template = template
        self.names = tuple(jinja2.meta.find_undeclared_variables(env.parse(text)))
        self.globals = dict(template.globals)

    def __call__(self, row: dict[str, Any], base: dict[str, Any], lets: dict[str, Any]) -> str:
        variables = dict(self.globals)
        for name in self.names:
            if name in lets:
                variables[name] = lets[name]
            elif name in row:
                variables[name] = row[name]
            elif name in base:
                variables[name] = base[name]
        template = self.template
        return run_guarded(lambda: new_context(self.environment, template.name, template.blocks, variables,
                                               shared=True), template)


def render(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """``template.render(variables)`` under the budget, every failure a ``TemplateFailure``."""
    return run_guarded(lambda: template.new_context(variables), template)


def run_guarded(make_context: Callable[[], Any], template: jinja2.Template) -> str:
    outer = (_budget.deadline, _budget.steps, _budget.depth)
    _budget.deadline, _budget.steps, _budget.depth = time.monotonic() + TIME_LIMIT_S, 0, 0
    try:
        parts: list[str] = []
        total = 0
        for chunk in template.root_render_func(make_context()):
            total += len(chunk)
            if total > MAX_TEXT:
                raise TemplateFailure(f"the rendered text is longer than {MAX_TEXT:,} characters (the limit)")
            parts.append(chunk)
            if len(parts) & 255 == 0:
                _tick()
        return "".join(parts)
    except TemplateFailure as exc:
        if exc.lineno is None:
            exc.lineno = _template_line(exc, template)
        raise
    except jinja2.UndefinedError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateFailure(_reason(exc), getattr(exc, "lineno", None)) from None
    except RecursionError:
        raise TemplateFailure("the template recurses too deeply (a macro that calls itself without end?)") from None
    except MemoryError:
        raise TemplateFailure("the template needs more memory than is available") from None
    except Exception as exc:  # noqa: BLE001 - whatever a template's arithmetic or filters raise is the spec's fault
        raise TemplateFailure(_reason(exc), _template_line(exc, template)) from None
    finally:
        _budget.deadline, _budget.steps, _budget.depth = outer


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError) and "MAX_RANGE" in str(exc):
        return "range() of more than 100,000 numbers is over the limit"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, jinja2.TemplateError):
        return text
    return f"{text} ({type(exc).__name__})"


def _template_line(exc: BaseException, template: jinja2.Template) -> int | None:
    """The template line of the innermost frame of ``exc`` that runs template code."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            try:
                line = template.get_corresponding_lineno(tb.tb_lineno)
            except Exception:  # noqa: BLE001  # pragma: no cover
                pass
        tb = tb.tb_next
    return line


def row_failure(exc: jinja2.TemplateError, task: str, condition: str, row: dict[str, Any], dataset: Any):
    """The PlanError for a template that fails on one row: which task, condition, row, dataset and file(s)."""
    from moraleval.language.nodes import ROW_ID
    from moraleval.errors import PlanError

    label = f"row {row.get(ROW_ID)}"
    for key in ("example_id", "id", "sentid", "example_index"):
        if key in row:
            label += f" ({key} {row[key]!r})"
            break
    files = sorted(getattr(dataset, "files_read", {}) or {})
    where = f"dataset '{dataset.name}'"
    if files:
        where += f", read from {', '.join(files[:3])}" + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    line = getattr(exc, "lineno", None)
    at = f" (template line {line})" if line else ""
    return PlanError(f"task '{task}', condition '{condition}': the template fails on {label} of {where}{at}: {exc}",
                     hint="guard the template for this row's values, e.g. "
                          "{% if ... %}...{% endif %}, or filter the row out in the dataset block")
