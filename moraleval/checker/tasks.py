"""The tasks pass: each task's conditions resolved (``extends`` chains, inherited turns, choices and lets), their
turns' templates checked against the dataset's columns and rendered on its first row, the ``choose`` line's
options evaluated there."""

from __future__ import annotations

from typing import Any

import jinja2
import jinja2.meta

from moraleval.checker.context import CheckContext
from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.checker.families import expand_conditions
from moraleval.checker.params import constant
from moraleval.checker.resolved import ResolvedCondition, ResolvedTask
from moraleval.checker.row_env import RowEnv
from moraleval.checker.templates import compile_template, find_in_template, template_line_span, turn_template
from moraleval.errors.source import Source
from moraleval.language import nodes as n
from moraleval.language import templating
from moraleval.language.rowexpr import EvalError, evaluate
from moraleval.util.text import did_you_mean

#: how a task's dialogue is rendered for the model (`format chat | text | raw`)
FORMATS = ("chat", "text", "raw")


def resolve_tasks(ctx: CheckContext) -> None:
    rotate_checked: set[int] = set()  # id(choose line): its rotate is checked once, however many conditions share it
    for t in ctx.statements(n.Task):
        resolved = _task(ctx, t, rotate_checked)
        if resolved is not None:
            ctx.tasks[t.name] = resolved


def check_columns(ctx: CheckContext, columns: Any, tasks: dict[str, ResolvedTask], node: Any, what: str) -> None:
    """Columns that group the items of some tasks (a bootstrap unit, report rows) exist in each task's dataset."""
    for task in tasks.values():
        ds = ctx.datasets[task.dataset]
        if not ds.columns:
            continue
        for c in columns:
            if c not in ds.columns:
                ctx.error(f"{what} '{c}': no such column in dataset '{ds.name}' (task '{task.name}')", node,
                          did_you_mean(c, ds.columns), ctx.source_of(node), code="E183")


def _task(ctx: CheckContext, t: n.Task, rotate_checked: set[int]) -> ResolvedTask | None:
    src = ctx.source_of(t)
    if t.dataset not in ctx.datasets:
        ctx.error(f"task '{t.name}' uses unknown dataset '{t.dataset}'", t,
                  did_you_mean(t.dataset, ctx.datasets) or "declare it with: dataset NAME { ... }", src,
                  code="E150")
        return None
    ds = ctx.datasets[t.dataset]
    t = expand_conditions(ctx, t, ds, src)  # condition families -> their members
    fmt = t.format or "chat"
    if fmt not in FORMATS:
        ctx.error(f"unknown format '{fmt}'", t, "use 'format chat', 'format text' or 'format raw'", src,
                  code="E151")
    by_name = {c.name: c for c in t.conditions}
    if not t.conditions:
        ctx.error(f"task '{t.name}' has no conditions", t, "add at least: condition Q { human ... }", src,
                  code="E152")
    resolved = []
    reported_cycles: set[frozenset[str]] = set()
    task_lets: dict[str, Any] = {}
    for let in t.lets:
        task_lets[let.name] = constant(ctx, let.value, {**ctx.consts, **task_lets}, let)
    for c in t.conditions:
        chain, node = [c.name], c
        turns, choose, lets_chain = c.turns, c.choose, [c]
        ok = True
        while node.extends is not None:
            parent = by_name.get(node.extends)
            if parent is None:
                ctx.error(f"condition '{node.name}' extends unknown condition '{node.extends}'", node,
                          did_you_mean(node.extends, by_name) or f"conditions of task '{t.name}': "
                          + ", ".join(by_name), src, code="E153")
                ok = False
                break
            if parent.name in chain:
                cycle = frozenset(chain[chain.index(parent.name):])
                if cycle not in reported_cycles:
                    reported_cycles.add(cycle)
                    ctx.error(f"conditions extend each other in a cycle: {' -> '.join(chain + [parent.name])}",
                              node, "one of them must not extend the other", src, code="E154")
                ok = False
                break
            chain.append(parent.name)
            lets_chain.append(parent)
            turns = turns or parent.turns
            choose = choose or parent.choose
            node = parent
        if not ok:
            continue
        choose = choose or t.choose
        lets = dict(task_lets)
        for cond in reversed(lets_chain):
            for let in cond.lets:
                lets[let.name] = constant(ctx, let.value, {**ctx.consts, **lets}, let)
        if not turns:
            ctx.error(f"condition '{c.name}' has no turns", c,
                      "add e.g.: human \"{{ question }}\" assistant \"The answer is\"", src, code="E155")
            continue
        if choose is None:
            ctx.error(f"condition '{c.name}' has nothing to score", c,
                      "add to the task: choose answer from [\" (a)\", \" (b)\"]", src, code="E156")
            continue
        rc = ResolvedCondition(c.name, t.name, lets, tuple(turns), choose, tuple(chain))
        first_row = ds.rows[0] if ds.rows else (ds.stand_in_rows[0] if ds.stand_in_rows else None)
        _check_turns(ctx, rc, ds, src, fmt, first_row)
        _check_choose(ctx, rc, ds, src, first_row, rotate_checked)
        if fmt == "text" and rc.turns and rc.turns[-1].role != "assistant":
            ctx.error(f"condition '{c.name}': in text format the last turn must be the assistant's "
                      "(the scored answer continues it)", rc.turns[-1], source=src, code="E164")
        resolved.append(rc)
    return ResolvedTask(t.name, t.dataset, fmt, tuple(resolved), t)


def _check_turns(ctx: CheckContext, c: ResolvedCondition, ds: DatasetResult, src: Source, fmt: str,
                 first_row: dict[str, Any] | None) -> None:
    """Each turn's generate step, and its template: every variable it uses is known, and it renders on the
    dataset's first row."""
    known = set(ds.columns) | set(ctx.consts) | set(c.lets)
    names_seen: set[str] = set()
    for turn in c.turns:
        info = turn_template(ctx, turn)
        if turn.generate is not None:
            g = turn.generate
            if turn.role != "assistant" and fmt != "raw":  # raw: roles are only labels, nothing is rendered
                ctx.error("only an assistant turn can be continued by 'then generate'", g, source=src,
                          code="E157")
            if g.max_tokens < 1:
                ctx.error("max_tokens must be at least 1", g, source=src, code="E158")
            if g.temperature < 0:
                ctx.error("temperature must be 0 (greedy) or more", g, source=src, code="E158")
            if not 0 < g.top_p <= 1:
                ctx.error("top_p must be in (0, 1]", g, source=src, code="E158")
            if g.name in names_seen:
                ctx.error(f"generate step '{g.name}' appears twice", g, source=src, code="E159")
            names_seen.add(g.name)
        if info is None:
            continue
        name, text, text_span, node = info
        if name == "inline":
            compiled = compile_template(ctx, text, text_span, f"the {turn.role} turn of condition '{c.name}'", turn)
            tsrc, tspan, ttext = src, text_span, text
        else:
            compiled = ctx.templates.get(name)
            tnode = next(t for t in ctx.statements(n.Template) if t.name == name)
            tsrc, tspan, ttext = ctx.source_of(tnode), tnode.text_span, tnode.text
        if compiled is None:
            continue
        try:
            ast = ctx.environment.parse(ttext)
        except jinja2.TemplateSyntaxError:  # a duplicate template of that name whose text is broken (reported)
            continue
        for var in sorted(jinja2.meta.find_undeclared_variables(ast)):
            if var in known:
                continue
            span = find_in_template(ttext, var, tspan)
            if var in names_seen:
                ctx.error(f"template uses '{var}', the text of a generate step", None,
                          "generated text is appended to its own assistant turn automatically; "
                          "later turns see it as part of the dialogue", tsrc, code="E145", span=span,
                          place=("condition", c.name))
                continue
            hint = did_you_mean(var, known)
            if ds.columns or ctx.consts or c.lets:
                hint = hint or ("available: " + ", ".join(sorted(known)[:25]))
            if not ds.columns:
                continue  # the data is absent or unreadable (already reported); columns are unknown
            where = f"the {turn.role} turn" if name == "inline" else f"template '{name}'"
            ctx.error(f"unknown variable '{var}' in {where} (dataset '{ds.name}'; {{places}} of task "
                      f"'{c.task}')", None,
                      hint, tsrc, code="E143", span=span, place=("condition", c.name))
        if first_row is not None:
            env = {**ctx.consts, **first_row, **c.lets}
            try:
                templating.render(compiled, env)
            except jinja2.UndefinedError as exc:
                if "is undefined" in str(exc) and "attribute" not in str(exc):
                    continue  # an unknown top-level name: reported above
                ctx.error(f"template fails on the first row of dataset '{ds.name}': {exc}", None,
                          "check the attribute and key names against the data", tsrc, code="E144",
                          span=tspan, place=("condition", c.name))
            except jinja2.TemplateError as exc:
                ctx.error(f"template fails on the first row of dataset '{ds.name}': {exc}", None, None,
                          tsrc, code="E144", span=template_line_span(tspan, getattr(exc, "lineno", 1) or 1),
                          place=("condition", c.name))


def _check_choose(ctx: CheckContext, c: ResolvedCondition, ds: DatasetResult, src: Source,
                  first_row: dict[str, Any] | None, rotate_checked: set[int]) -> None:
    """The condition's ``choose`` line: scoring and normalisation known, options (and values) evaluated on the
    first row, its ``rotate`` columns."""
    choose = c.choose
    if choose.method != "logprob":
        ctx.error(f"unknown scoring '{choose.method}'", choose, "use: by logprob", src, code="E160")
    if choose.normalize not in ("softmax", "none"):
        ctx.error(f"unknown normalisation '{choose.normalize}'", choose, "use: normalize softmax | none",
                  src, code="E161")
    options = None
    if first_row is not None:
        env = RowEnv(first_row, {**ctx.consts, **c.lets})
        options = _row_value(ctx, choose.options, env, src, "the options of 'choose'")
        values = _row_value(ctx, choose.values, env, src, "the values of 'choose'") if choose.values else None
        if options is not None:
            if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
                ctx.error(f"'choose {choose.name} from ...' needs a non-empty list of strings, got {options!r}",
                          choose.options, source=src, code="E162")
            elif values is not None and (not isinstance(values, list) or len(values) != len(options)):
                ctx.error(f"'values' must list one value per option ({len(options)}), got {values!r}",
                          choose.values, source=src, code="E163")
    if id(choose) not in rotate_checked:
        rotate_checked.add(id(choose))
        _check_rotate(ctx, choose, ds, src, options, first_row)


def _check_rotate(ctx: CheckContext, choose: n.Choose, ds: DatasetResult, src: Source, options: Any,
                  first_row: dict[str, Any] | None = None) -> None:
    """`choose ... rotate c0, c1, ...`: distinct dataset columns, at least two (E166), one per option on the
    first row (E167); or one column holding a list, with one element per option (the options' texts written
    inside the prompt, e.g. the "(A) ... (B) ..." of a model-written evaluation's question)."""
    rot = choose.rotate
    if not rot:
        return
    options_ok = isinstance(options, list) and options and all(isinstance(o, str) for o in options)
    if len(rot) == 1:
        shown = first_row.get(rot[0], None) if first_row is not None else None
        if first_row is None or rot[0] not in first_row:
            pass  # no row to look at, or an unknown column (reported below)
        elif not isinstance(shown, list):
            ctx.error(f"'rotate {rot[0]}': one rotated column must hold a list (one element per option), but it "
                      f"holds {type(shown).__name__} on the first row", choose,
                      "name one column per option (rotate ans0, ans1, ans2), or one column holding the options' "
                      "texts as a list", src, code="E166")
        elif options_ok and len(shown) != len(options):
            ctx.error(f"'rotate {rot[0]}' holds {len(shown)} elements on the first row but 'choose {choose.name}' "
                      f"has {len(options)} options", choose, "the list needs one element per option, in the "
                      "order the prompt shows them", src, code="E167")
    elif options_ok and len(options) != len(rot):
        ctx.error(f"'rotate' names {len(rot)} columns but 'choose {choose.name}' has {len(options)} options",
                  choose, "name one column per option, in the order the prompt shows them", src, code="E167")
    dup = sorted({c for c in rot if rot.count(c) > 1})
    if dup:
        ctx.error(f"'rotate' names column(s) {', '.join(dup)} more than once", choose, None, src, code="E166")
    unknown = [c for c in rot if ds.columns_known and ds.columns and c not in ds.columns]
    for c in unknown:
        ctx.error(f"'rotate': unknown column '{c}' in dataset '{ds.name}'", choose,
                  did_you_mean(c, ds.columns) or "rotate names the row columns the prompt shows as options",
                  src, code="E166")


def _row_value(ctx: CheckContext, expr: n.Expr, env: RowEnv, src: Source, what: str) -> Any:
    try:
        return evaluate(expr, env)
    except EvalError as exc:
        hint = None
        if str(exc).startswith("unknown name"):
            hint = did_you_mean(exc.node.name, list(env))
        ctx.error(f"{what}: {exc}", exc.node, hint, src, code="E165")
        return None
