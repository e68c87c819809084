"""A seeded mutation fuzzer over the shipped specs, the error fixtures and a tiny dataset (issue #12).

Each case mutates bytes, tokens or lines of a real spec (or a data file the spec pins), or plants something hostile:
invalid UTF-8 (in the spec, in an imported file, in data), NUL bytes, bad escapes, deep nesting, 300- and
5000-character names, templates that try to exhaust memory or time or change the data.  Every case runs
``moraleval check`` (or ``plan``) in-process and must answer with diagnostics and an exit code of 0, 1 or 2 —
never a traceback — within 10 s.

The fast run does ``FAST_CASES`` cases; the slow run (``-m slow``) ``MORALEVAL_FUZZ_CASES`` (default 10,000) and
prints the tally (cases, clean diagnostics, tracebacks, hangs).  Seeds are fixed: a failure names its case number,
and ``MORALEVAL_FUZZ_SEED`` / the case number reproduce it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import time
import traceback
from pathlib import Path

import pytest

from moraleval.cli import main

from _support import REPO, SPECS, TINY_ITEMS

FIXTURES = REPO / "tests" / "fixtures" / "errors"
FAST_CASES = int(os.environ.get("MORALEVAL_FUZZ_FAST_CASES", "150"))
SLOW_CASES = int(os.environ.get("MORALEVAL_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("MORALEVAL_FUZZ_SEED", "20261202"))
HANG_S = 10

WORDS = ["metric", "dataset", "task", "condition", "extends", "template", "import", "param", "let", "choose",
         "from", "values", "where", "mean(", "count(", "then generate", "human", "assistant", "{", "}", "(", ")",
         "[", "]", "=", "==", ",", ":", '"', '"""', "#", "{{", "}}", "{%", "%}", "\n", "-", "1e999", "0", "-1",
         "none", "sample", "per", "seed", "join", "on", "expand", "in", "for", "if", "else", "not", "unit",
         "bootstrap", "compare", "vs", "test", "model", "default", "sha256", "file", "read", "jsonl", "csv",
         "../", "/etc/passwd", "moraleval 2", "\t", "\\", "\\u12", "\\x4", "\\N{nosuch}", "\0", "9" * 5000,
         "base_url: \"http://u:KEY@h/v1\"", "?api_key=KEY"]
HOSTILE_TEMPLATES = [
    "{{ 'a' * 10**9 }}", "{{ (10**100)**(10**100) }}", "{% for x in range(10**9) %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "{% include 'x' %}", "{% import 'x' as y %}",
    "{% extends 'x' %}", "{{ 1/0 }}", "{{ 'x'|wordwrap(-1) }}", "{{ answer_info.clear() }}",
    "{{ additional_metadata.update({'a': 1}) }}", "{{ " + "(" * 100 + "1" + ")" * 100 + " }}",
    "{{ " + "-" * 500 + "1 }}", "{{ 'a'|center(1000000000) }}", "{{ '%999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}", "{% set ns = namespace(x='a') %}{% for i in range(64) %}"
    "{% set ns.x = ns.x ~ ns.x %}{% endfor %}", "{{ lipsum(10**6) }}", "{{ ''.__class__.__mro__ }}",
    "{{ range(10)|list * 10**8 }}", "{{ 10**400 * 1.0 }}", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "{{ cycler.__init__.__globals__ }}", "{{ self._TemplateReference__context }}", "{{ 9**9**9 }}",
]
DEEP = ["-", "not ", "(", "[", "{{ (", "mean(", "1 + "]
BAD_BYTES = [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\x00", b"\xfe\xff", b'"', b"{", b"}", b"\\", b"\n",
             b"\r", b"\x1b"]


def spec_targets() -> list[Path]:
    return sorted(SPECS.rglob("*.me")) + sorted(FIXTURES.glob("*.me"))


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(data))
        op = rng.random()
        if op < 0.4:
            data = data[:i] + rng.choice(BAD_BYTES) + data[i:]
        elif op < 0.7:
            data = data[:i] + data[i + rng.randint(1, 8):]
        elif data:
            j = min(i, len(data) - 1)
            data = data[:j] + bytes([data[j] ^ (1 << rng.randint(0, 7))]) + data[j + 1:]
    return data


def _mutate_tokens(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(text))
        piece = rng.choice(WORDS)
        if rng.random() < 0.5:  # replace the word under i
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            text = text[:i] + piece + text[end:]
        else:
            text = text[:i] + " " + piece + " " + text[i:]
    return text


def _mutate_lines(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randint(0, len(lines) - 1)
        op = rng.choice(["delete", "duplicate", "swap", "truncate"])
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = rng.randint(0, max(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "truncate":
            lines = lines[:i]
    return "\n".join(lines)


def _deep(rng: random.Random, text: str) -> str:
    depth = rng.choice([30, 60, 100, 150, 500, 3000])
    opener = rng.choice(DEEP)
    closer = {"(": ")", "[": "]", "{{ (": ")", "mean(": ")"}.get(opener, "")
    nest = opener * depth + "x" + closer * depth + (" }}" if opener == "{{ (" else "")
    lines = text.split("\n")
    if rng.random() < 0.5:
        lines.append(rng.choice([f"let deep = {nest}", f"metric deep = {nest}", f'template deep = "{nest}"']))
    else:
        i = rng.randint(0, max(0, len(lines) - 1))
        col = rng.randint(0, len(lines[i]))
        lines[i] = lines[i][:col] + nest + lines[i][col:]
    return "\n".join(lines)


def _long_name(rng: random.Random, text: str) -> str:
    name = rng.choice(["a" * 300, "b/" * 200 + "c", "é" * 200, "d" * 5000])
    line = rng.choice([f'import "{name}.me"', f'data "{name}"',
                       f'dataset long {{\n    read jsonl "{name}.jsonl"\n}}', f'study "{name}"',
                       f'param {"p" * 300} = 1', f'let x = "{name}"'])
    lines = text.split("\n")
    lines.insert(rng.randint(1, max(1, len(lines))), line)
    return "\n".join(lines)


def _hostile_template(rng: random.Random, text: str) -> str:
    strings = [m for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"', text)]
    template = rng.choice(HOSTILE_TEMPLATES).replace('"', "'")
    if strings and rng.random() < 0.7:
        m = rng.choice(strings)
        return text[:m.start()] + '"' + template + '"' + text[m.end():]
    return text + f'\ntemplate hostile = "{template}"\n'


SPEC_OPS = {"bytes": 3, "tokens": 3, "lines": 2, "deep": 1, "long_name": 1, "hostile_template": 2}


class Fuzzer:
    """Builds case ``k`` deterministically from the seed and runs it."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.seed = root, seed
        self.specs = root / "specs"
        shutil.copytree(SPECS, self.specs)
        self.fixtures = root / "fixtures"
        shutil.copytree(FIXTURES, self.fixtures)
        self.data = root / "data"
        (self.data / "tiny").mkdir(parents=True)
        self.items = "".join(json.dumps(r) + "\n" for r in TINY_ITEMS).encode("utf-8")
        (self.data / "tiny" / "items.jsonl").write_bytes(self.items)
        (self.data / "tiny" / "stats.tsv").write_bytes(b"group\tshare\na\t0.25\nb\t0.75\n")
        self.work = root / "case"
        self.work.mkdir()
        self.targets = [p for p in spec_targets()]

    def case(self, k: int) -> tuple[list[str], str]:
        rng = random.Random(self.seed * 1_000_003 + k)
        for p in self.work.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        kind = rng.choices(["spec", "import", "data", "quickstart"], [70, 10, 15, 5])[0]
        if kind == "data":
            return self._data_case(rng)
        if kind == "import":
            lib = rng.choice(sorted((SPECS / "lib").glob("*.me")))
            (self.work / "lib.me").write_bytes(_mutate_bytes(rng, lib.read_bytes()))
            (self.work / "main.me").write_text('moraleval 1\nimport "lib.me"\n', encoding="utf-8")
            return ["check", str(self.work / "main.me"), "--data", str(self.data)], f"import of mutated {lib.name}"
        if kind == "quickstart":
            lib = rng.choice(["quickstart.me", "lib/bbq.me", "lib/bbq_data.me", "lib/winogender.me",
                              "lib/winogender_data.me"])
            target = self.specs / lib
            original = (SPECS / lib).read_bytes()
            target.write_bytes(self._mutated(rng, original))
            self._restore = (target, original)
            return [rng.choice(["check", "plan"]), str(self.specs / "quickstart.me")], f"quickstart, mutated {lib}"
        source = rng.choice(self.targets)
        path = self.work / source.name
        path.write_bytes(self._mutated(rng, source.read_bytes()))
        return [rng.choice(["check", "check", "plan"]), str(path), "--data", str(self.data)], f"mutated {source.name}"

    def _mutated(self, rng: random.Random, data: bytes) -> bytes:
        op = rng.choices(list(SPEC_OPS), list(SPEC_OPS.values()))[0]
        if op == "bytes":
            return _mutate_bytes(rng, data)
        text = data.decode("utf-8")
        fn = {"tokens": _mutate_tokens, "lines": _mutate_lines, "deep": _deep, "long_name": _long_name,
              "hostile_template": _hostile_template}[op]
        return fn(rng, text).encode("utf-8", "surrogatepass")

    def _data_case(self, rng: random.Random) -> tuple[list[str], str]:
        fmt = rng.choice(["jsonl", "csv", "tsv"])
        if fmt == "jsonl":
            data = self.items
        else:
            sep = "," if fmt == "csv" else "\t"
            cols = ["id", "context", "question", "ans0", "ans1", "label"]
            data = (sep.join(cols) + "\n" + "".join(sep.join(str(r[c]) for c in cols) + "\n"
                                                      for r in TINY_ITEMS)).encode("utf-8")
        choice = rng.random()
        if choice < 0.1:
            data = b""
        elif choice < 0.2:
            data = data.split(b"\n", 1)[0] + b"\n"
        else:
            data = _mutate_bytes(rng, data)
        rel = f"fz/items.{fmt}"
        (self.work / "data" / "fz").mkdir(parents=True)
        (self.work / "data" / rel).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        template = rng.choice(["{{ context }} {{ question }}"] * 3 + HOSTILE_TEMPLATES).replace('"', "'")
        spec = (f'moraleval 1\ndataset d {{\n    file "{rel}" sha256 "{sha}"\n    read {fmt} "{rel}"\n}}\n'
                'task t on d {\n    choose a from [" x", " y"] values [0, 1]\n    condition Q {\n'
                f'        human "{template}"\n        assistant "A:"\n    }}\n}}\nmetric m = mean(a == label)\n')
        (self.work / "spec.me").write_text(spec, encoding="utf-8")
        return [rng.choice(["check", "plan"]), str(self.work / "spec.me"), "--data", str(self.work / "data")], \
            f"{fmt} data"

    def run(self, k: int) -> tuple[str, str, float]:
        """('clean' | 'ok' | 'traceback' | 'hang' | 'bad_exit', detail, seconds)."""
        self._restore = None
        args, what = self.case(k)
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_S)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)
        except Hang:
            return "hang", f"case {k} ({what}): {args}", time.monotonic() - started
        except SystemExit as exc:  # argparse
            code = exc.code
        except BaseException:  # noqa: BLE001 - anything escaping main() is a failure to report
            return "traceback", f"case {k} ({what}): {traceback.format_exc()}", time.monotonic() - started
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            if self._restore is not None:
                self._restore[0].write_bytes(self._restore[1])
        seconds = time.monotonic() - started
        text = err.getvalue()
        if "Traceback" in text or "internal error" in text:
            return "traceback", f"case {k} ({what}): {text[-3000:]}", seconds
        if code not in (0, 1, 2):
            return "bad_exit", f"case {k} ({what}): exit {code}: {text[-2000:]}", seconds
        if code and "error" not in text:
            return "bad_exit", f"case {k} ({what}): exit {code} without an error message", seconds
        return ("clean" if code else "ok"), "", seconds


def fuzz(tmp_path: Path, cases: int) -> dict:
    f = Fuzzer(tmp_path, SEED)
    tally: collections.Counter = collections.Counter()
    failures = []
    slowest, slowest_case = 0.0, None
    for k in range(cases):
        outcome, detail, seconds = f.run(k)
        tally[outcome] += 1
        if seconds > slowest:
            slowest, slowest_case = seconds, k
        if detail:
            failures.append(detail)
    return {"cases": cases, "clean_diagnostics": tally["clean"], "accepted": tally["ok"],
            "tracebacks": tally["traceback"], "hangs": tally["hang"], "bad_exits": tally["bad_exit"],
            "slowest_s": round(slowest, 2), "slowest_case": slowest_case, "failures": failures}


def _assert_clean(result: dict) -> None:
    shown = "\n\n".join(result["failures"][:5])
    assert result["tracebacks"] == 0 and result["hangs"] == 0 and result["bad_exits"] == 0, shown
    assert result["clean_diagnostics"] > result["cases"] // 2  # the mutations do break the specs


def test_fuzz_quick(tmp_path):
    _assert_clean(fuzz(tmp_path, FAST_CASES))


@pytest.mark.slow
def test_fuzz_10000_cases(tmp_path, capsys):
    started = time.monotonic()
    result = fuzz(tmp_path, SLOW_CASES)
    result["wall_s"] = round(time.monotonic() - started, 1)
    with capsys.disabled():
        print("\nfuzz:", json.dumps({k: v for k, v in result.items() if k != "failures"}))
    _assert_clean(result)


def test_every_case_is_reproducible(tmp_path):
    a, b = Fuzzer(tmp_path / "a", SEED), Fuzzer(tmp_path / "b", SEED)
    for k in (0, 7, 42):
        args_a, _ = a.case(k)
        text_a = Path(args_a[1]).read_bytes()
        args_b, _ = b.case(k)
        assert Path(args_b[1]).read_bytes() == text_a


@pytest.mark.parametrize("case", [3324, 1032, 1057, 2282, 2577])  # found by the slow run: two templates of one
# name, one of them broken (3324); a `data` line whose path is too long for the file system (the rest)
def test_cases_the_slow_run_found(tmp_path, case):
    outcome, detail, _ = Fuzzer(tmp_path, SEED).run(case)
    assert outcome in ("clean", "ok"), detail
