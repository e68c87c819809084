"""The checker on the constructs of the seed studies: per-item definitions, choice names as formula parameters,
families (`for VAR in LIST [vs REF]`, condition families, regressions), value types, equivalence margins."""

from __future__ import annotations

import pytest

import moraleval
from moraleval.errors import SpecCheckError

HEAD = '''moraleval 1
data "builtin:sample"
param margin = 0.05
dataset bbq {
    file "bbq/sample.jsonl" sha256 "c9de9aa01f1c0668e51e2b1a73d1a8038c3d915240a0375f321c2928d6629f48"
    read jsonl "bbq/sample.jsonl"
}
task qa on bbq {
    choose answer from [" (a)", " (b)", " (c)"] values [0, 1, 2]
    condition Q {
        let who = "someone"
        human "{{ context }} {{ question }} Answer as {{ who }} would."
        assistant "The answer is"
    }
    condition as_group for who in ["a teacher", "a nurse"] extends Q {
    }
}
'''


def _check(tmp_path, body: str):
    spec = tmp_path / "s.me"
    spec.write_text(HEAD + body, encoding="utf-8")
    return moraleval.check(str(spec))


def _errors(tmp_path, body: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecCheckError) as exc:
        _check(tmp_path, body)
    return [(d.code, d.message) for d in exc.value.diagnostics if d.severity == "error"]


def test_items_choice_parameters_and_families_expand(tmp_path) -> None:
    checked = _check(tmp_path, '''
item margin_ab = logprob(answer, 0) - logprob(answer, 1)
item p_of(c, v) = prob(c, v)
metric gap = mean(margin_ab)
metric p0 = mean(p_of(answer, 0))
metric acc_by for ctx in levels(context_condition) = mean(answer == label where context_condition == ctx)
metric vs_ambig for ctx in levels(context_condition) vs "ambig" = mean(margin_ab where context_condition == ctx)
    correct bh
metric fit = ols(margin_ab ~ ref(context_condition, "ambig") + ref(question_polarity, "neg"))
metric one_coef = ols(margin_ab ~ ref(context_condition, "ambig"))["context_condition=disambig"]
compare as_group vs Q on acc_by test tost margin margin
''')
    ms = {m.name: m for m in checked.metrics}
    assert ms["gap"].items == {"margin_ab": "logprob(answer, 0) - logprob(answer, 1)"}
    assert ms["p0"].items == {"p_of(c, v)": "prob(c, v)"}  # a choice's name passed as a parameter
    assert {"acc_by[ambig]", "acc_by[disambig]", "vs_ambig[disambig]"} <= set(ms)
    assert "vs_ambig[ambig]" not in ms and ms["vs_ambig[disambig]"].correction == "bh"
    assert ms["vs_ambig[disambig]"].test == "sign_flip" and ms["acc_by[ambig]"].test is None
    assert [m for m in ms if m.startswith("fit[")] == ["fit[Intercept]", "fit[context_condition=disambig]",
                                                       "fit[question_polarity=nonneg]"]
    assert ms["fit[Intercept]"].member == {"term": "Intercept"} and ms["fit[Intercept]"].test == "wald"
    assert "one_coef" in ms and ms["one_coef"].family is None
    conds = [c.name for c in checked.tasks["qa"].conditions]
    assert conds == ["Q", "as_group[a teacher]", "as_group[a nurse]"]
    assert checked.tasks["qa"].conditions[1].lets["who"] == "a teacher"
    (cmp,) = checked.comparisons
    assert cmp.margin == 0.05 and cmp.pairs == (("as_group[a teacher]", "Q"), ("as_group[a nurse]", "Q"))
    assert cmp.metrics == ("acc_by[ambig]", "acc_by[disambig]")


@pytest.mark.parametrize("body, code, words", [
    ("item ok = mean(answer == label)\nmetric m = mean(ok)", "E175", "cannot hold an aggregate"),
    ("item label = answer == 0\nmetric m = mean(label)", "E175", "name of a column"),
    ("metric m for c in levels(nosuch) = mean(answer == c)", "E176", "no column 'nosuch'"),
    ("metric m for c in [1, 1] = mean(answer == c)", "E176", "twice"),
    ('metric m for c in ["x"] vs "x" = mean(answer == c)', "E176", "no value besides the reference"),
    ("metric m = mean(answer == label) correct holm", "E176", "`correct` applies to a tested family"),
    ('metric m = ols(answer == label ~ context_condition)', "E177", "holds text"),
    ('metric m = ols(answer == label ~ ref(context_condition, "fuzzy"))', "E177", "not a value of"),
    ('metric m = ols(answer == label ~ z(age) + (1 | category))', "E177", "need a mixed model"),
    ('metric m = mixed(answer == label ~ ref(context_condition, "ambig"))', "E177", "needs its random effects"),
    ('metric m = ols(answer == label ~ ref(context_condition, "ambig"))["nope"]', "E177", "picks one coefficient"),
    ("metric m = mean(z(label))", "E177", "in a regression's formula only"),
    ("metric m = mean(dist(answer))", "E178", "is a vector"),
    ("metric m = mean(jsd(prob(answer, 0), dist(answer)))", "E178", "needs a vector"),
    ("metric m = mean(dist(answer) + 1)", "E178", "needs numbers"),
    ("metric m = quantile(label, 1.5)", "E178", "between 0 and 1"),
    ("metric m = mean(answer == label)\ncompare as_group vs Q on m test tost", "E179", "needs its margin"),
    ("metric m = mean(answer == label)\ncompare as_group vs Q on m test bootstrap margin 0.1", "E179",
     "belongs to an equivalence test"),
    ("metric m = mean(answer == label)\ncompare as_group vs Q on m test tost margin -0.1", "E001", ""),
    ("metric m = mean(answer == label)\ncompare as_group vs Q on m test tost margin per_cell", "E179",
     "not a parameter"),
])
def test_each_problem_has_its_code(tmp_path, body, code, words) -> None:
    if code == "E001":
        with pytest.raises(Exception):  # a negative literal margin is not in the grammar (a number or a name)
            _check(tmp_path, body)
        return
    errors = _errors(tmp_path, body)
    assert any(c == code and words in msg for c, msg in errors), errors


def test_a_condition_extending_a_family_is_an_error(tmp_path) -> None:
    spec = HEAD.replace("    condition as_group for who in", "    condition later extends as_group {\n    }\n"
                                                             "    condition as_group for who in")
    (tmp_path / "s.me").write_text(spec, encoding="utf-8")
    with pytest.raises(SpecCheckError) as exc:
        moraleval.check(str(tmp_path / "s.me"))
    assert any(d.code == "E176" and "a family of conditions" in d.message for d in exc.value.diagnostics)


def test_compare_model_expands_families_and_takes_an_equivalence_margin(tmp_path) -> None:
    checked = _check(tmp_path, '''
metric acc_by for ctx in levels(context_condition) = mean(answer == label where context_condition == ctx)
model standard = onnx { model: "default" }
model public = onnx { model: "default", quantize: "int8" }
compare model public vs standard on acc_by test tost margin margin
''')
    (cmp,) = [c for c in checked.comparisons if c.models]
    assert cmp.test == "tost" and cmp.margin == 0.05
    assert cmp.metrics == ("acc_by[ambig]", "acc_by[disambig]")


def test_vs_ref_as_other_keeps_both_sides_on_the_items_they_share(tmp_path) -> None:
    """`vs REF as OTHER`: OTHER is REF in a level's formula and the level in the reference's, so each member is
    f(level | both) - f(REF | both) (GlobalOpinionQA's paired contrast on the questions two countries share)."""
    from moraleval.language.exprjson import to_source

    checked = _check(tmp_path, '''
metric gap for c in ["Age", "Religion"] vs "Nationality" as other =
    mean(answer == label where category == c or category == other)
''')
    ms = {m.name: m for m in checked.metrics}
    assert set(ms) == {"gap[Age]", "gap[Religion]"}
    a, b = ms["gap[Age]"].parts
    assert to_source(a) == 'mean(answer == label where category == "Age" or category == "Nationality")'
    assert to_source(b) == 'mean(answer == label where category == "Nationality" or category == "Age")'
    assert to_source(ms["gap[Religion]"].parts[1]) == \
        'mean(answer == label where category == "Nationality" or category == "Religion")'
    assert ms["gap[Age]"].test == "sign_flip" and ms["gap[Age]"].member == {"c": "Age"}
    errors = _errors(tmp_path, 'metric m for c in ["Age"] as other = mean(answer == c)')
    assert any(code == "E176" and "needs `vs REF`" in msg for code, msg in errors), errors
    errors = _errors(tmp_path, 'metric m for c in ["Age"] vs "SES" as c = mean(answer == c)')
    assert any(code == "E176" and "a name other than" in msg for code, msg in errors), errors


def test_a_condition_family_on_a_metric_family_of_the_same_values_pairs_member_by_member(tmp_path) -> None:
    checked = _check(tmp_path, '''
metric by_who for who in ["a teacher", "a nurse"] = mean(answer == label)
metric by_ctx for ctx in levels(context_condition) = mean(answer == label where context_condition == ctx)
metric acc = mean(answer == label)
compare as_group vs Q on by_who, by_ctx, acc test bootstrap correct holm
''')
    (cmp,) = checked.comparisons
    assert cmp.combos == (
        ("as_group[a teacher]", "Q", "by_who[a teacher]"), ("as_group[a nurse]", "Q", "by_who[a nurse]"),
        ("as_group[a teacher]", "Q", "by_ctx[ambig]"), ("as_group[a teacher]", "Q", "by_ctx[disambig]"),
        ("as_group[a nurse]", "Q", "by_ctx[ambig]"), ("as_group[a nurse]", "Q", "by_ctx[disambig]"),
        ("as_group[a teacher]", "Q", "acc"), ("as_group[a nurse]", "Q", "acc"))
    plan = moraleval.compile_plan(checked)
    got = [(c.treatment, c.baseline, c.metric) for c in plan.comparisons]
    assert got == list(cmp.combos) and len({c.family for c in plan.comparisons}) == 1
    # without such a meeting, every pair on every metric, as before (no combos)
    checked = _check(tmp_path, '''
metric acc = mean(answer == label)
compare as_group vs Q on acc test bootstrap correct holm
''')
    assert checked.comparisons[0].combos == ()
    assert len(moraleval.compile_plan(checked).comparisons) == 2
