"""Hostile and broken input (issue #12's reproducers): every one is a located diagnostic or a one-line error with
the documented exit code, never a Python traceback; templates stay within their limits and cannot change data."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from moraleval.cli import main

from _support import SPECS, TINY_ITEMS_SHA256, run_cli



def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def check_text(tmp_path: Path, text: str | bytes, *extra: str) -> tuple[int, str]:
    spec = write(tmp_path / "spec.me", text)
    code, out, err = run_cli(["check", str(spec), *extra])
    return code, err + out


# ---------------------------------------------------------------------------- the spec's own text

@pytest.mark.parametrize("literal, reason, column", [
    (r'"\u12"', "truncated \\uXXXX escape", 10),
    (r'"ab\x4"', "truncated \\xXX escape", 12),
    (r'"\N{no such name}"', "unknown Unicode character name", 10),
    (r'"ok \U0011ffff"', "illegal Unicode character", 13),
])
def test_a_bad_escape_is_a_located_diagnostic(tmp_path, literal, reason, column):
    code, text = check_text(tmp_path, f"moraleval 1\nlet a = {literal}\n")
    assert code == 2
    assert f"spec.me:2:{column}: error[E002]: invalid escape in a string: {reason}" in text
    assert "hint: write \\\\ for a backslash" in text


def test_a_nul_byte_in_a_string_is_a_located_diagnostic(tmp_path):
    code, text = check_text(tmp_path, 'moraleval 1\nlet a = "ab\0c"\n')
    assert code == 2
    assert "spec.me:2:12: error[E002]: a string cannot contain a NUL byte" in text


def test_500_unary_minus_hit_the_explicit_nesting_limit(tmp_path):
    code, text = check_text(tmp_path, "moraleval 1\nlet a = " + "-" * 500 + "1\n")
    assert code == 2
    assert "error[E003]: expression nested deeper than 100 levels" in text
    assert "spec.me:2:" in text


def test_a_number_longer_than_python_reads_is_a_diagnostic(tmp_path):
    code, text = check_text(tmp_path, "moraleval 1\nlet a = " + "9" * 5000 + "\n")
    assert code == 2
    assert "spec.me:2:9: error[E002]: number with 5000 digits is too long" in text


def test_100_parentheses_inside_a_template_hit_the_template_nesting_limit(tmp_path):
    code, text = check_text(tmp_path, 'moraleval 1\ntemplate t = "{{ ' + "(" * 100 + "1" + ")" * 100 + ' }}"\n')
    assert code == 2
    assert "spec.me:2:15: error[E140]: template error in template 't': template expression nested deeper than 30" in text


@pytest.mark.parametrize("recursion_limit", [1000, 20000])
@pytest.mark.parametrize("terms", [150, 300, 3000])
def test_a_long_operator_chain_in_a_template_is_a_located_diagnostic(tmp_path, terms, recursion_limit):
    """Jinja2 parenthesises every operation, so ``1 + 1 + ... + 1`` compiles to Python nested hundreds deep: a
    SyntaxError from Python's compiler or a RecursionError in Jinja2's code generator, whichever the stack allows
    (the CI failure at stop 27 ran under a raised recursion limit)."""
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(recursion_limit)
    try:
        code, text = check_text(tmp_path, 'moraleval 1\nlet x = 1\n\ntemplate t = """\nline one\n{{ '
                                + "1 + " * terms + 'x }}"""\n')
    finally:
        sys.setrecursionlimit(old_limit)
    assert code == 2, text
    assert "Traceback" not in text and "internal error" not in text
    assert "spec.me:6:1:" in text  # the line of the {{ }} holding the chain
    assert "error[E140]: template error in template 't': template expression has more than 100 operators" in text


@pytest.mark.parametrize("block, end", [("{% for i in x %}", "{% endfor %}"), ("{% if x %}", "{% endif %}")])
def test_blocks_nested_past_python_s_static_limit_are_a_diagnostic(tmp_path, block, end):
    code, text = check_text(tmp_path, 'moraleval 1\ntemplate t = "' + block * 25 + "y" + end * 25 + '"\n')
    assert "Traceback" not in text and "internal error" not in text
    if block.startswith("{% for"):  # Python refuses more than 20 statically nested loops
        assert code == 2, text
        assert "template nested too deeply for Python's compiler (too many statically nested blocks)" in text
    else:  # ifs do not count towards that limit: 25 of them compile
        assert code in (0, 1), text


def test_an_imported_file_with_invalid_utf8_is_a_located_diagnostic(tmp_path):
    write(tmp_path / "lib.me", b"moraleval 1\nlet a = \xff\n")
    code, text = check_text(tmp_path, 'moraleval 1\nimport "lib.me"\n')
    assert code == 2
    assert ("spec.me:2:1: error[E112]: imported file 'lib.me' is not UTF-8 text (byte 0xff at line 2, column 9)"
            in text)


def test_an_import_of_a_300_character_name_says_the_name_is_too_long(tmp_path):
    code, text = check_text(tmp_path, 'moraleval 1\nimport "' + "a" * 300 + '.me"\n')
    assert code == 2
    assert "spec.me:2:1: error[E112]: imported file 'aaaa" in text
    assert "has a name too long for the file system" in text


def test_a_read_path_of_300_characters_is_a_diagnostic(tmp_path, tiny_data):
    spec = ('moraleval 1\ndataset d {\n    read jsonl "' + "b" * 300 + '.jsonl"\n}\n')
    code, text = check_text(tmp_path, spec, "--data", str(tiny_data))
    assert code == 2
    assert "spec.me:3:5: error[E136]: data file 'bbbb" in text and "has a name too long" in text


@pytest.mark.parametrize("path, shown", [
    ("tiny/{c.jsonl", "unbalanced braces"),
    ("tiny/{c.__class__}.jsonl", "placeholder '{c.__class__}' that is not '{c}'"),
    ("tiny/{c!r}.jsonl", "placeholder '{c!r}' that is not '{c}'"),
    ("tiny/{c:>9}.jsonl", "placeholder '{c:>9}' that is not '{c}'"),
    ("tiny/{other}.jsonl", "placeholder '{other}' that is not '{c}'"),
])
def test_a_read_path_with_a_bad_placeholder_is_a_located_diagnostic(tmp_path, tiny_data, path, shown):
    # found by the slow fuzz (case 3780): an unbalanced brace in a `read ... for` path was a ValueError traceback
    spec = f'moraleval 1\ndataset d {{\n    read jsonl "{path}" for c in ["items"]\n}}\n'
    code, text = check_text(tmp_path, spec, "--data", str(tiny_data))
    assert code == 2
    assert "spec.me:3:5: error[E137]:" in text and shown in text and "'{{' and '}}' for literal braces" in text


def test_a_data_line_too_long_for_the_file_system_is_skipped_with_a_warning(tmp_path):
    # found by the slow fuzz (cases 1032, 1057, 2282, 2577): is_dir() raised ENAMETOOLONG
    spec = 'moraleval 1\ndata "' + "a" * 300 + '"\n'
    code, text = check_text(tmp_path, spec)
    assert code == 0
    assert "spec.me:2:1: warning[W133]: data root 'aaaa" in text and "is skipped" in text


def test_check_of_a_300_character_spec_name(tmp_path):
    code, _, err = run_cli(["check", str(tmp_path / ("c" * 300 + ".me"))])
    assert code == 1
    assert "has a name too long for the file system" in err
    code, _, err = run_cli([str(tmp_path / ("c" * 300 + ".me"))])  # `moraleval SPEC` is `run SPEC`
    assert code == 1 and "has a name too long" in err


def test_check_of_a_directory_says_to_give_the_spec_files(tmp_path):
    code, _, err = run_cli(["check", str(SPECS)])
    assert code == 1
    assert f"error: spec file '{SPECS}' is a directory, not a file" in err
    assert f"hint: give the spec files in it, e.g. {SPECS}/*.me" in err


def test_a_top_level_spec_with_invalid_utf8(tmp_path):
    code, text = check_text(tmp_path, b"moraleval 1\n# caf\xe9\n")
    assert code == 1
    assert "is not UTF-8 text (byte 0xe9 at line 2, column 6)" in text


# ---------------------------------------------------------------------------- data files

def _data_spec(rel: str, sha: str, fmt: str = "jsonl") -> str:
    return (f'moraleval 1\ndataset d {{\n    file "{rel}" sha256 "{sha}"\n    read {fmt} "{rel}"\n}}\n'
            'task t on d {\n    choose a from [" x", " y"]\n    condition Q {\n        human "{{ id }}"\n'
            '        assistant "A:"\n    }\n}\n')


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt, data, message", [
    ("jsonl", b'{"id": 1}\n{"id": "caf\xe9"}\n', "is not UTF-8 text (byte 0xe9 at line 2, column 12)"),
    ("csv", b"id,name\n1,ok\n2,caf\xe9\n", "is not UTF-8 text (byte 0xe9 at line 3, column 6)"),
    ("jsonl", b"", "the file is empty"),
    ("jsonl", b"\n\n", "the file is empty"),
    ("csv", b"id,name\n", "the file has a header line but no rows"),
])
def test_unreadable_data_files_are_named_with_their_line(tmp_path, fmt, data, message):
    root = tmp_path / "data"
    write(root / "d" / f"f.{fmt}", data)
    code, text = check_text(tmp_path, _data_spec(f"d/f.{fmt}", _sha(data), fmt), "--data", str(root))
    assert code == 2
    assert message in text
    assert str(root / "d" / f"f.{fmt}") in text
    assert "no rows left after its filters" not in text


def test_a_directory_where_a_data_file_should_be(tmp_path):
    root = tmp_path / "data"
    (root / "d" / "f.jsonl").mkdir(parents=True)
    code, text = check_text(tmp_path, _data_spec("d/f.jsonl", "0" * 64), "--data", str(root))
    assert code == 2
    assert "error[E136]: data file 'd/f.jsonl' is a directory, not a file" in text
    assert "missing" not in text


def test_a_negative_sample_size_from_set_is_an_error(monkeypatch):
    monkeypatch.delenv("MORALEVAL_DATA", raising=False)
    code, _, err = run_cli(["plan", str(SPECS / "quickstart.me"), "--set", "per_cell=-5"])
    assert code == 2
    assert "error[E137]: sample size must be 0 (keep every row) or more, got -5" in err


# ---------------------------------------------------------------------------- command-line values

@pytest.mark.parametrize("args, message", [
    (["run", "SPEC", "--limit", "-1"], "argument --limit: must be at least 0, got -1"),
    (["run", "SPEC", "--batch-size", "-3"], "argument --batch-size: must be at least 1, got -3"),
    (["run", "SPEC", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["run", "SPEC", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["run", "SPEC", "--limit", "x"], "argument --limit: expected a whole number, got 'x'"),
    (["plan", "SPEC", "--show", "-1"], "argument --show: must be at least 0, got -1"),
])
def test_command_line_numbers_are_validated_up_front(args, message, capsys):
    args = [str(SPECS / "quickstart.me") if a == "SPEC" else a for a in args]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["run", "SPEC", "--batch-size", "100000000"], "argument --batch-size: must be at most 65,536, got 100,000,000"),
    (["run", "SPEC", "--workers", "5000"], "argument --workers: must be at most 4,096, got 5,000"),
])
def test_absurd_command_line_counts_are_refused_like_the_spec_s(args, message, capsys):
    test_command_line_numbers_are_validated_up_front(args, message, capsys)


@pytest.mark.parametrize("setting, message, hint", [
    ("batch_size: -3", "run setting 'batch_size' must be at least 1, got -3",
     "give a whole number from 1 to 65,536, e.g. batch_size: 8"),
    ("batch_size: 0", "run setting 'batch_size' must be at least 1, got 0", "e.g. batch_size: 8"),
    ("workers: 0", "run setting 'workers' must be at least 1, got 0", "e.g. workers: 2"),
    ("workers: -2", "run setting 'workers' must be at least 1, got -2", "e.g. workers: 2"),
    ("workers: 100000000000000000000", "run setting 'workers' must be at most 4,096, got 100,000,000,000,000,000,000",
     "give a whole number from 1 to 4,096"),
    ("batch_size: 1000000", "run setting 'batch_size' must be at most 65,536, got 1,000,000",
     "--batch-size N overrides it"),
    ("batch_size: 2.5", "run setting 'batch_size' must be a whole number, got 2.5", "e.g. batch_size: 8"),
])
def test_run_settings_in_a_spec_are_validated_like_the_flags(tmp_path, tiny_data, setting, message, hint):
    spec = (_data_spec("tiny/items.jsonl", TINY_ITEMS_SHA256)
            + f"run {{\n    executor: \"local\",\n    {setting}\n}}\n")
    code, text = check_text(tmp_path, spec, "--data", str(tiny_data))
    assert code == 2
    column = 5 + len(setting.split(": ")[0]) + 2  # the diagnostic points at the value
    assert f"spec.me:{spec.splitlines().index('    ' + setting) + 1}:{column}: error[E196]: {message}" in text
    assert f"hint: {hint}" in text or hint in text


def test_valid_run_settings_pass_the_checker(tmp_path, tiny_data):
    spec = (_data_spec("tiny/items.jsonl", TINY_ITEMS_SHA256)
            + "run { batch_size: 65536, workers: 1 }\n")
    code, text = check_text(tmp_path, spec, "--data", str(tiny_data))
    assert code == 0 and "run setting" not in text, text


class _NoBackend(Exception):
    pass


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_a_bad_out_directory_is_refused_before_any_request_runs(tmp_path, monkeypatch, where):
    import moraleval.execute.ray as rx

    monkeypatch.delenv("MORALEVAL_DATA", raising=False)  # quickstart reads the sample shipped with moraleval

    def no_backend(*a, **k):
        raise _NoBackend("the backend must not be created when --out is unusable")

    monkeypatch.setattr(rx, "make_executor_backend", no_backend)
    target = write(tmp_path / "afile", "x")
    out = target if where == "file" else target / "sub"
    code, _, err = run_cli(["run", str(SPECS / "quickstart.me"), "--out", str(out), "--no-progress"])
    assert code == 2
    expected = "is a file, not a directory" if where == "file" else f"is under {target}, which is a file"
    assert f"error: --out {out} {expected}" in err


def test_an_out_directory_is_created_and_probed(tmp_path):
    from moraleval.util.outdir import prepare_out_dir

    out = prepare_out_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


# ---------------------------------------------------------------------------- templates

def _template_spec(template: str, *, extra_condition: str = "") -> str:
    return ('moraleval 1\ndataset items {\n'
            f'    file "tiny/items.jsonl" sha256 "{TINY_ITEMS_SHA256}"\n    read jsonl "tiny/items.jsonl"\n}}\n'
            'task t on items {\n    choose pick from [" (a)", " (b)"] values [0, 1]\n'
            f'    condition Q {{\n        human "{template}"\n        assistant "The answer is"\n    }}\n'
            f'{extra_condition}}}\n'
            'metric acc = mean(pick == label)\n')


HOSTILE = [
    ("{{ 'a' * 10**9 }}", "repeating something of length 1 1e+09 times is over the limit (1,000,000)"),
    ("{{ (10**100)**(10**100) }}", "is larger than 2**4096 (the limit)"),
    ("{% for x in range(10**9) %}{% endfor %}", "range() of more than 100,000 numbers is over the limit"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls nested deeper than 50"),
    ("{{ 1/0 }}", "division by zero"),
    ("{{ context|wordwrap(-1) }}", "wordwrap needs a width of at least 1, got -1"),
    ("{{ context|center(1000000000) }}", "'center' with a size of 1e+09 is over the limit"),
    ("{{ '%999999999d' % 1 }}", "a format width of 999999999 is over the limit"),
    ("{{ '{:>999999999}'.format(1) }}", "a format width of 999999999 is over the limit"),
    ("{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
     "the template builds text longer than 1,000,000 (the limit)"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "the template loops more than 1,000,000 times (the limit)"),
    ("{{ meta.clear() }}", "not allowed in a template: access to attribute 'clear' of 'dict' object is unsafe"),
    ("{{ meta.tags.append(1) }}", "access to attribute 'append' of 'list' object is unsafe"),
    ("{{ context.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
]


@pytest.mark.parametrize("template, message", HOSTILE)
def test_hostile_templates_are_diagnostics_within_limits(tmp_path, tiny_data, template, message):
    started = time.monotonic()
    code, text = check_text(tmp_path, _template_spec(template), "--data", str(tiny_data))
    assert code == 2, text
    assert "spec.me:9:" in text and "template fails on the first row of dataset 'items'" in text
    assert message in text
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("statement", ["include 'x.me'", "import 'x.me' as x", "extends 'x.me'"])
def test_templates_cannot_load_other_templates(tmp_path, tiny_data, statement):
    code, text = check_text(tmp_path, _template_spec("{% " + statement + " %}"), "--data", str(tiny_data))
    assert code == 2
    keyword = statement.split()[0]
    assert f"error[E140]: template error in the user turn of condition 'Q': '{{% {keyword} %}}' is not available" in text


def test_a_template_cannot_change_what_another_condition_renders(tmp_path, tiny_data):
    other = ('    condition R {\n        human "{{ meta }} {{ context }}"\n        assistant "The answer is"\n'
             '    }\n')
    spec = write(tmp_path / "spec.me", _template_spec("{{ meta.update({'tags': 'TAMPERED'}) }}",
                                                      extra_condition=other))
    code, out, err = run_cli(["plan", str(spec), "--data", str(tiny_data), "--show", "1"])
    assert code == 2
    assert "TAMPERED" not in out  # no prompt is shown: the plan stops at the refused mutation
    assert "access to attribute 'update' of 'dict' object is unsafe" in err


@pytest.mark.parametrize("template", ["{{ d.clear() }}", "{{ d.update({'a': 0}) }}", "{{ d.setdefault('z', 1) }}",
                                      "{{ d.pop('a') }}", "{{ d.l.append(9) }}", "{{ d.l.extend([9]) }}",
                                      "{{ d.l.sort(reverse=true) }}", "{{ d.l.pop() }}", "{{ d|attr('clear') }}",
                                      "{% set x = d.l.insert(0, 1) %}"])
def test_rows_are_read_only_to_templates(template):
    from moraleval.language import templating

    env = templating.make_environment()
    row = {"d": {"a": 1, "l": [1, 2]}}
    with pytest.raises((templating.TemplateFailure, Exception)) as info:
        templating.render(templating.compile_template(env, template), row)
    assert "unsafe" in str(info.value) or "undefined" in str(info.value)
    assert row == {"d": {"a": 1, "l": [1, 2]}}


def test_a_template_failing_only_on_a_later_row_names_the_row_and_the_file(tmp_path, tiny_data):
    spec = write(tmp_path / "spec.me", _template_spec("{{ context }} {{ 1 / (id - 2) }}"))  # fails on id 2
    code, _, err = run_cli(["plan", str(spec), "--data", str(tiny_data)])
    assert code == 2
    assert "Traceback" not in err
    assert "error: task 't', condition 'Q': the template fails on row 2 (id 2) of dataset 'items', read from " \
           "tiny/items.jsonl" in err
    assert "division by zero" in err


def test_ordinary_templates_render_unchanged():
    from moraleval.language.templating import compile_template, make_environment, render

    env = make_environment()
    text = ("{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %} {{ '%5.2f' % x }} {{ 'x'|center(5) }}"
            " {{ 2 ** 10 }} {{ [1] * 3 }} {{ 'a' ~ 'b' }} {{ '{:>4}'.format(7) }}")
    assert render(compile_template(env, text), {"d": {"b": 2, "a": 1}, "x": 3.14159}) == \
        "a=1;b=2;  3.14   x   1024 [1, 1, 1] ab    7"


def test_a_slow_template_stops_at_the_time_limit(monkeypatch):
    from moraleval.language import templating

    monkeypatch.setattr(templating, "TIME_LIMIT_S", 0.2)
    env = templating.make_environment()
    t = templating.compile_template(env, "{% for i in range(100000) %}{% for j in range(9) %}{{ i ** 50 % 7 }}"
                                         "{% endfor %}{% endfor %}")
    started = time.monotonic()
    with pytest.raises(templating.TemplateFailure, match="longer than 0.2 s to render"):
        templating.render(t, {})
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------------------- the library call (issue #24)

@pytest.mark.parametrize("options, message", [
    ({"out": ""}, "out must be a directory path, got '' (an empty path would write into the current directory)"),
    ({"out": 3}, "out must be a directory path, got 3"),
    ({"batch_size": 10 ** 9}, "batch_size must be from 1 to 65,536, got 1,000,000,000"),
    ({"batch_size": "8"}, "batch_size must be a whole number, got '8'"),
    ({"batch_size": True}, "batch_size must be a whole number, got True"),
    ({"workers": 0}, "workers must be from 1 to 4,096, got 0"),
    ({"limit": -1}, "limit must be at least 0, got -1"),
    ({"limit": 1.5}, "limit must be a whole number, got 1.5"),
    ({"progress": "yes"}, "progress must be one of auto, bar, plain, none (or True/False), got 'yes'"),
    ({"models": 5}, "models must be a name, 'a,b' or a list of names, got 5"),
    ({"cache": 5}, "cache must be a directory or a ResponseCache, got 5"),
    ({"data": [1, 2]}, "data must be a data root or a list of them (paths), got (1, 2)"),
    ({"overrides": 5}, "overrides must be a mapping {name: value} or a list of 'NAME=VALUE', got 5"),
    ({"executor": "gpu"}, "executor must be one of local, ray, got 'gpu'"),
    ({"colour": True}, "got an unexpected keyword argument 'colour'"),
    ({"log": "print"}, "log must be a function taking one string (e.g. print), got 'print'"),
    ({"backends": ["a"]}, "backends must be a mapping {model name: backend}, got ['a']"),
])
def test_the_library_call_refuses_what_the_cli_refuses_before_anything_runs(tmp_path, monkeypatch, options,
                                                                            message):
    """`moraleval.run()` checks its arguments with the CLI's bounds and types up front: one MoralevalError naming
    the argument, never a TypeError from deep inside, and nothing written (``out=""`` would have written the
    report into the working directory)."""
    import moraleval
    from moraleval.errors import MoralevalError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MoralevalError) as info:
        moraleval.run(SPECS / "quickstart.me", **options)
    assert f"moraleval.run(): {message}" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_options_given_twice_are_checked_the_same_way(tmp_path):
    import moraleval
    from moraleval.errors import MoralevalError
    from moraleval.pipeline import RunOptions

    with pytest.raises(MoralevalError, match="batch_size must be from 1 to 65,536"):
        moraleval.run(SPECS / "quickstart.me", RunOptions(out=tmp_path), batch_size=10 ** 9)
    with pytest.raises(MoralevalError, match="options must be a RunOptions"):
        moraleval.run(SPECS / "quickstart.me", {"out": tmp_path})
    with pytest.raises(MoralevalError, match="spec must be the path of a .me file, got 3"):
        moraleval.run(3)


@pytest.mark.parametrize("resamples, message", [
    (50, "50 resamples are too few for an interval"),
    (200_000, "200,000 resamples are more than an interval can use (at most 100,000)"),
])
def test_bootstrap_resamples_are_bounded_both_ways(tmp_path, tiny_data, resamples, message):
    """The spec language's own range, which a report folder's report.json is held to when it is read back."""
    code, text = check_text(tmp_path, _template_spec("{{ context }}") + f"bootstrap resamples {resamples}\n",
                            "--data", str(tiny_data))
    assert code == 2 and "error[E181]" in text and message in text
