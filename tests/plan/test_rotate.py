"""`choose ... rotate c0, c1, ...`: parsed, checked (E166/E167) and planned into one item per cyclic rotation whose
values move with the shown texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from moraleval.language import nodes as n
from moraleval.checker.passes import check
from moraleval.errors import SpecCheckError
from moraleval.language.parser import parse_text
from moraleval.plan.compile import compile_plan

REPO = Path(__file__).resolve().parents[2]
SAMPLE = str(REPO / "moraleval" / "data" / "sample")


def _spec(tmp: Path, choose: str, name: str = "s.me") -> Path:
    p = tmp / name
    p.write_text(f'''moraleval 1
data "builtin:sample"
param categories = ["sample"]
param per_cell = 0
import "{REPO / "specs/lib/bbq_data.me"}"
import "{REPO / "specs/lib/bbq.me"}"
task bbq_answer on bbq {{
    format chat
    {choose}
    condition Q {{
        let instruction = ""
        human bbq_question
        assistant "The answer is"
    }}
    condition Q_IF extends Q {{
        let instruction = bbq_instruction
    }}
}}
''', encoding="utf-8")
    return p


CHOOSE = 'choose answer from [" (a)", " (b)", " (c)"] values [0, 1, 2]'


def test_parse_rotate_and_its_absence():
    spec = parse_text(f'task t on d {{ {CHOOSE} rotate ans0, ans1, ans2 condition Q {{ human "x" }} }}')
    task = spec.of(n.Task)[0]
    assert task.choose.rotate == ("ans0", "ans1", "ans2") and task.choose.values is not None
    plain = parse_text(f'task t on d {{ {CHOOSE} condition Q {{ human "x" }} }}')
    assert plain.of(n.Task)[0].choose.rotate == ()
    # `rotate` stays usable as a name elsewhere
    parse_text("let rotate = 1\nmetric m = mean(rotate == 1)")


@pytest.mark.parametrize("clause, code, text", [
    ("rotate ans0, ans1, ans9", "E166", "unknown column 'ans9'"),
    ("rotate ans0, ans0, ans1", "E166", "more than once"),
    ("rotate ans0", "E166", "one rotated column must hold a list"),
    ("rotate ans0, ans1", "E167", "names 2 columns but 'choose answer' has 3 options"),
])
def test_check_rejects_bad_rotations(tmp_path, clause, code, text):
    with pytest.raises(SpecCheckError) as info:
        check(_spec(tmp_path, f"{CHOOSE} {clause}"), data_root=SAMPLE)
    assert [e.code for e in info.value.errors] == [code] and text in str(info.value)


def test_plan_has_one_item_per_rotation_with_the_values_moved_with_the_texts(tmp_path):
    plan = compile_plan(check(_spec(tmp_path, f"{CHOOSE} rotate ans0, ans1, ans2"), data_root=SAMPLE, mode="plan"))
    plain = compile_plan(check(_spec(tmp_path, CHOOSE, "plain.me"), data_root=SAMPLE, mode="plan"))
    assert len(plan.items) == 3 * len(plain.items) and len(plan.requests) == 3 * len(plain.requests)
    assert plan.tasks["bbq_answer"]["conditions"][0]["rotate"] == ["ans0", "ans1", "ans2"]
    assert "rotate" not in plain.tasks["bbq_answer"]["conditions"][0]
    reqs = plan.request_by_key()
    first = [it for it in plan.items if it.row == 0 and it.condition == "Q"]
    assert [it.rotation for it in first] == [0, 1, 2]
    assert [it.choice_values for it in first] == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    row0 = next(it for it in plain.items if it.row == 0 and it.condition == "Q")
    assert first[0].request == row0.request  # rotation 0 is the uncounterbalanced prompt (shared cache)
    texts = [reqs[it.request].turns[0].text for it in first]
    ans = [texts[0].split(f"({a}) ")[1].split(" (")[0].rstrip(".") for a, _ in zip("abc", range(3))]
    for it, text in zip(first, texts):
        # the option shown at letter i is the dataset's answer number choice_values[i]
        for letter, value in zip("abc", it.choice_values):
            assert f"({letter}) {ans[value]}" in text
    assert all(it.to_json()["rotation"] == it.rotation for it in first)
    assert "rotation" not in row0.to_json()
