"""The shapes of report.json, samples.jsonl and manifest.json, checked before anything reads them.

A report folder may come from anyone (a pull request, a colleague, a tarball), so every field the pages, ``diff``,
``verify`` and ``view`` use is checked for its type (and, where it matters, its range) first; a field of the wrong
kind is one sentence naming the file and the field (``estimates[3].value is a list, expected a number``), never
a TypeError from deep inside.  Unknown fields are allowed (a newer moraleval may add some) and never read.

The shapes are a small table of checkers (:class:`Str`, :class:`Int`, :class:`Num`, :class:`Obj`, ...), one per
JSON kind; numbers written as ``"nan"``, ``"inf"``, ``"-inf"`` are how report.json stores non-finite values
(``report.build``), so :data:`NUM` accepts them.
"""

from __future__ import annotations

from typing import Any, Mapping

from moraleval.language.vocabulary import BOOTSTRAP_RESAMPLES

__all__ = ["MANIFEST", "REPORT", "SAMPLE", "SchemaProblem", "check", "check_report", "sample_ok"]


Where = tuple  # the path to a value: keys (str) and list positions (int); made into text only for a message


def _path(where: Where) -> str:
    text = ""
    for part in where:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if part.isidentifier() and len(part) <= 60 else repr(part[:60])
            text += f".{shown}" if text else shown
    return text


class SchemaProblem(Exception):
    """``where`` (``estimates[3].value``) is not what it should be (``what``)."""

    def __init__(self, where: Where | str, what: str) -> None:
        where = where if isinstance(where, str) else _path(where)
        super().__init__(f"{where or 'the top level'} {what}")
        self.where, self.what = where, what


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__  # pragma: no cover - json gives only the kinds above


class Shape:
    """What one JSON value must be; ``expect`` says it in words.  ``accepts`` answers without building a message
    (samples.jsonl has millions of values to check)."""

    expect = "anything"

    def check(self, v: Any, where: Where) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def accepts(self, v: Any) -> bool:
        try:
            self.check(v, ())
        except SchemaProblem:
            return False
        return True

    def fail(self, v: Any, where: Where) -> None:
        raise SchemaProblem(where, f"is {_kind(v)}, expected {self.expect}")


class AnyJSON(Shape):
    def check(self, v: Any, where: Where) -> None:
        pass

    def accepts(self, v: Any) -> bool:
        return True


class Null(Shape):
    expect = "null"

    def accepts(self, v: Any) -> bool:
        return v is None

    def check(self, v: Any, where: Where) -> None:
        if v is not None:
            self.fail(v, where)


class Str(Shape):
    expect = "a string"

    def accepts(self, v: Any) -> bool:
        return isinstance(v, str)

    def check(self, v: Any, where: Where) -> None:
        if not isinstance(v, str):
            self.fail(v, where)


class Const(Shape):
    def __init__(self, value: str) -> None:
        self.value = value
        self.expect = f'"{value}"'

    def accepts(self, v: Any) -> bool:
        return v == self.value

    def check(self, v: Any, where: Where) -> None:
        if v != self.value:
            raise SchemaProblem(where, f"is {str(v)[:60]!r}, expected {self.expect} (a report of another format or "
                                       "a newer moraleval)" if isinstance(v, str) else f"is {_kind(v)}, expected "
                                       f"{self.expect}")


class Bool(Shape):
    expect = "true or false"

    def accepts(self, v: Any) -> bool:
        return isinstance(v, bool)

    def check(self, v: Any, where: Where) -> None:
        if not isinstance(v, bool):
            self.fail(v, where)


class Int(Shape):
    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high
        self.expect = "a whole number" + (f" from {low:,} to {high:,}" if low is not None and high is not None
                                          else f" of at least {low}" if low is not None else "")

    def accepts(self, v: Any) -> bool:
        return (type(v) is int and (self.low is None or v >= self.low) and (self.high is None or v <= self.high))

    def check(self, v: Any, where: Where) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(v, where)
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            raise SchemaProblem(where, f"is {v:,}, expected {self.expect}")


_NON_FINITE = ("nan", "inf", "-inf")


class Num(Shape):
    """A number, or one of the strings report.json writes for non-finite values; optionally within bounds."""

    def __init__(self, low: float | None = None, high: float | None = None, *, strict: bool = False) -> None:
        self.low, self.high, self.strict = low, high, strict
        self.expect = "a number" + (f" between {low} and {high}" if low is not None and high is not None else "")

    def accepts(self, v: Any) -> bool:
        if self.low is None:
            t = type(v)
            return t is float or t is int or (t is str and v in _NON_FINITE)
        return Shape.accepts(self, v)

    def check(self, v: Any, where: Where) -> None:
        if isinstance(v, str) and v in _NON_FINITE and self.low is None:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(v, where)
        if self.low is not None and self.high is not None and not (
                self.low < v < self.high if self.strict else self.low <= v <= self.high):
            raise SchemaProblem(where, f"is {v}, expected {self.expect}" + (" (exclusive)" if self.strict else ""))


class Opt(Shape):
    """null, or ``inner``."""

    def __init__(self, inner: Shape) -> None:
        self.inner = inner
        self.expect = f"{inner.expect} or null"

    def accepts(self, v: Any) -> bool:
        return v is None or self.inner.accepts(v)

    def check(self, v: Any, where: Where) -> None:
        if v is not None:
            self.inner.check(v, where)


class Either(Shape):
    def __init__(self, *options: Shape) -> None:
        self.options = options
        self.expect = " or ".join(o.expect for o in options)

    def accepts(self, v: Any) -> bool:
        for o in self.options:
            if o.accepts(v):
                return True
        return False

    def check(self, v: Any, where: Where) -> None:
        if not self.accepts(v):
            self.fail(v, where)


class ListOf(Shape):
    def __init__(self, item: Shape) -> None:
        self.item = item
        self.expect = f"a list of {_plural(item.expect)}"

    def check(self, v: Any, where: Where) -> None:
        if not isinstance(v, list):
            self.fail(v, where)
        item = self.item
        for i, x in enumerate(v):
            if not item.accepts(x):
                item.check(x, where + (i,))


class MapOf(Shape):
    """An object whose every value is ``value``."""

    def __init__(self, value: Shape) -> None:
        self.value = value
        self.expect = "an object" if isinstance(value, AnyJSON) else f"an object of {_plural(value.expect)}"

    def check(self, v: Any, where: Where) -> None:
        if not isinstance(v, dict):
            self.fail(v, where)
        value = self.value
        if isinstance(value, AnyJSON):
            return
        for k, x in v.items():
            if not value.accepts(x):
                value.check(x, where + (k,))


class Obj(Shape):
    """An object with ``required`` fields (each of its shape), ``optional`` ones (when present); others are
    allowed and not read."""

    expect = "an object"

    def __init__(self, required: Mapping[str, Shape] | None = None, optional: Mapping[str, Shape] | None = None
                 ) -> None:
        self.required, self.optional = dict(required or {}), dict(optional or {})

    def check(self, v: Any, where: Where) -> None:
        if not isinstance(v, dict):
            self.fail(v, where)
        for k, shape in self.required.items():
            if k not in v:
                raise SchemaProblem(where, f"has no field \"{k}\"")
            x = v[k]
            if not shape.accepts(x):
                shape.check(x, where + (k,))
        for k, shape in self.optional.items():
            if k in v:
                x = v[k]
                if not shape.accepts(x):
                    shape.check(x, where + (k,))


_PLURALS = (("a whole number", "whole numbers"), ("a number", "numbers"), ("a string", "strings"),
            ("an object", "objects"), ("a list", "lists"), ("null", "nulls"))


def _plural(expect: str) -> str:
    """"a whole number from 1 to 9 or null" -> "whole numbers from 1 to 9 or nulls"."""
    parts = []
    for part in expect.split(" or "):
        for one, many in _PLURALS:
            if part.startswith(one):
                part = many + part[len(one):]
                break
        parts.append(part)
    return " or ".join(parts)


def check(shape: Shape, value: Any, where: Where = ()) -> None:
    """Raise SchemaProblem naming the first field of ``value`` that ``shape`` does not allow."""
    shape.check(value, where)


# -- the shapes -----------------------------------------------------------------------------------------------

STR, INT, COUNT, ANY = Str(), Int(), Int(0), AnyJSON()
NUM_VALUE = Num()
NUM = Opt(NUM_VALUE)  # a value, a non-finite value, or null (undefined)
SCALAR = Either(Str(), Num(), Bool(), Null())  # a data value as the samples and groups hold it
GROUP = Opt(MapOf(SCALAR))
FLAG = Obj({"code": STR, "message": STR})
UNIT = Either(Str(), ListOf(Str()))

ESTIMATE = Obj({"task": STR, "metric": STR, "condition": STR, "value": NUM, "ci_low": NUM, "ci_high": NUM},
               {"group": GROUP, "model": Opt(STR), "n": Opt(COUNT), "n_units": Opt(COUNT), "level": Opt(Num()),
                "method": Opt(STR), "unit": Opt(UNIT), "resamples": Opt(COUNT), "flags": ListOf(FLAG),
                "warnings": ListOf(STR)})
COMPARISON = Obj({"task": STR, "metric": STR, "treatment": STR, "baseline": STR, "effect": NUM, "ci_low": NUM,
                  "ci_high": NUM},
                 {"group": GROUP, "model": Opt(STR), "n": Opt(COUNT), "n_units": Opt(COUNT), "p_value": NUM,
                  "p_adjusted": NUM, "p_method": Opt(STR), "statistic": NUM, "test": Opt(STR),
                  "correction": Opt(STR), "flags": ListOf(FLAG), "warnings": ListOf(STR)})
ACROSS_RESULT = Obj({"kind": STR, "task": STR, "metric": STR, "model": STR, "baseline_model": STR,
                     "condition": STR, "treatment": STR, "baseline": STR, "effect": NUM, "ci_low": NUM,
                     "ci_high": NUM, "test": STR, "p_value": NUM, "p_adjusted": NUM, "n_units": COUNT},
                    {"group": GROUP, "axis": Opt(STR), "scale": Opt(STR), "p_method": Opt(STR),
                     "flags": ListOf(FLAG), "warnings": ListOf(STR)})
COUNTS = Obj({"items": COUNT, "items_answered": COUNT, "requests": COUNT, "requests_answered": COUNT},
             {"models": Opt(COUNT), "per_model": MapOf(MapOf(ANY))})

REPORT = Obj(
    {"format": Const("moraleval-report/1"),
     "tasks": MapOf(Obj({"conditions": ListOf(STR)},
                        {"dataset": Opt(STR), "format": Opt(STR), "items": Opt(COUNT), "items_answered": Opt(COUNT),
                         "unit": Opt(UNIT)})),
     "metrics": ListOf(Obj({"name": STR, "task": STR},
                           {"formula": Opt(STR), "doc": Opt(STR), "expr": Opt(MapOf(ANY))})),
     "bootstrap": Obj({"resamples": Int(*BOOTSTRAP_RESAMPLES), "seed": Int(0, 2 ** 63 - 1),
                       "level": Num(0.0, 1.0, strict=True), "method": STR},
                      {"unit": Opt(Either(Str(), ListOf(Str()), MapOf(UNIT)))}),
     "estimates": ListOf(ESTIMATE),
     "comparisons": ListOf(COMPARISON)},
    {"study": Opt(STR),
     "spec": Opt(Obj(optional={"file": Opt(STR), "sha256": Opt(STR), "imports": Opt(MapOf(Opt(STR)))})),
     "params": ANY,
     "model": Opt(Obj(optional={"key": Opt(STR), "identity": ANY, "name": Opt(STR)})),
     "models": Opt(MapOf(Obj(optional={"backend": Opt(STR), "about": Opt(MapOf(ANY)), "complete": Bool(),
                                       "error": Opt(STR), "key": Opt(STR), "identity": ANY, "counts": ANY}))),
     "model_set": Opt(Obj(optional={"name": Opt(STR), "models": ListOf(STR), "axis": Opt(STR),
                                    "scale": Opt(STR)})),
     "missing_models": Opt(ListOf(STR)),
     "across": Opt(Obj(optional={"results": ListOf(ACROSS_RESULT), "warnings": ListOf(ANY)})),
     "counts": COUNTS,
     "datasets": Opt(MapOf(Obj(optional={"rows": Opt(COUNT), "rows_read": Opt(COUNT), "files": ListOf(STR),
                                         "joins": Opt(MapOf(ANY))}))),
     "dropped": Opt(Obj(optional={"datasets": Opt(MapOf(ANY)), "measurement": ANY})),
     "warnings": Opt(ListOf(ANY)),
     "answer_distribution": Opt(ListOf(Obj({"task": STR, "condition": STR, "n": COUNT, "counts": MapOf(COUNT)},
                                           {"model": Opt(STR)}))),
     "float_format": Opt(STR)})

SAMPLE = Obj(
    {"task": STR, "condition": STR, "row": SCALAR, "variant": SCALAR, "unit": SCALAR, "request": STR,
     "choice": STR, "choices": ListOf(STR), "choice_values": ListOf(SCALAR), "logprobs": ListOf(Num())},
    {"index": COUNT, "prompts": MapOf(ANY), "generated": MapOf(STR), "n_tokens": ListOf(COUNT),
     "readout": Opt(Obj(optional={"probs": Opt(ListOf(Num())), "status": Opt(STR), "source": Opt(STR),
                                  "items": Opt(MapOf(ANY))})),
     "values": MapOf(ANY), "item": STR, "model": Opt(STR), "top": ANY, "rotation": ANY})

_SCALAR_TYPES = (str, int, float, bool, type(None))


def sample_ok(r: Any) -> bool:
    """SAMPLE's check of a valid row, without building messages: samples.jsonl has millions of rows to check, and
    the generic check (which names the first wrong field) runs only when this says no.  Held equal to SAMPLE by
    tests/test_report_folders.py."""
    if type(r) is not dict:
        return False
    try:
        if not (type(r["task"]) is str and type(r["condition"]) is str and type(r["request"]) is str
                and type(r["choice"]) is str):
            return False
        for k in ("row", "variant", "unit"):
            v = r[k]
            if not isinstance(v, _SCALAR_TYPES):
                return False
        choices, values, logprobs = r["choices"], r["choice_values"], r["logprobs"]
    except KeyError:
        return False
    if type(choices) is not list or any(type(c) is not str for c in choices):
        return False
    if type(values) is not list or not all(isinstance(v, _SCALAR_TYPES) for v in values):
        return False
    if type(logprobs) is not list or not all(NUM_VALUE.accepts(v) for v in logprobs):
        return False
    for k, shape in SAMPLE.optional.items():
        if k in r and not shape.accepts(r[k]):
            return False
    return True


SHA256 = Str()
MANIFEST = Obj(
    {"format": Const("moraleval-manifest/1"), "outputs": MapOf(SHA256)},
    {"spec": Opt(Obj(optional={"path": Opt(STR), "sha256": Opt(SHA256)})),
     "imports": Opt(ListOf(Obj({"path": STR}, {"resolved": Opt(STR), "sha256": Opt(SHA256)}))),
     "data_root": Opt(STR),
     "data_files": Opt(MapOf(SHA256)),
     "model_files": Opt(MapOf(SHA256)),
     "backend": Opt(Obj(optional={"name": Opt(STR), "model_key": Opt(STR), "identity": ANY, "settings": ANY})),
     "backends": Opt(MapOf(Opt(Obj(optional={"name": Opt(STR), "model_key": Opt(STR), "identity": ANY,
                                             "settings": ANY, "complete": Bool(), "error": Opt(STR)})))),
     "params": ANY, "seeds": ANY, "versions": Opt(MapOf(Opt(STR))), "missing_models": Opt(ListOf(STR)),
     "not_hashed": Opt(Obj(optional={"started": Opt(STR), "finished": Opt(STR), "run": ANY, "note": Opt(STR)}))})


def check_report(report: Any) -> None:
    """REPORT, then what the pages assume across fields: every model a model set names is described."""
    check(REPORT, report)
    models = report.get("models") or {}
    for i, name in enumerate((report.get("model_set") or {}).get("models") or []):
        if name not in models:
            raise SchemaProblem(("model_set", "models", i), f"names '{name[:60]}', which models does not describe")
    if models:
        for i, e in enumerate(report["estimates"]):
            if not isinstance(e.get("model"), str):
                raise SchemaProblem(("estimates", i, "model"), "is missing (a report of several models names the "
                                                             "model of every estimate)")
        for i, c in enumerate(report["comparisons"]):
            if not isinstance(c.get("model"), str):
                raise SchemaProblem(("comparisons", i, "model"), "is missing (a report of several models names "
                                                               "the model of every comparison)")
