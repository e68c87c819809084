"""Shared fixtures for the spec-language tests: where the shared data is, and tiny data roots made on the fly."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"


def shared_data_root() -> Path | None:
    """``<workspace>/shared/data`` next to the checkout, else ``$MORALEVAL_DATA``; None when neither has BBQ."""
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("MORALEVAL_DATA"):
        candidates.append(Path(os.environ["MORALEVAL_DATA"]))
    for root in candidates:
        if (root / "bbq" / "Age.jsonl").is_file():
            return root
    return None


# The tiny data root: four rows are enough for every checker path (read, join, derive, filter, sample).
TINY_ITEMS = [
    {"id": 0, "context": "A doctor and a nurse met.", "question": "Who was rude?", "ans0": "The doctor",
     "ans1": "The nurse", "label": 0, "group": "a", "context_condition": "ambig", "meta": {"tags": ["x"]}},
    {"id": 1, "context": "A cook and a pilot met.", "question": "Who was late?", "ans0": "The cook",
     "ans1": "The pilot", "label": 1, "group": "b", "context_condition": "disambig", "meta": {"tags": []}},
    {"id": 2, "context": "A judge and a clerk met.", "question": "Who was kind?", "ans0": "The judge",
     "ans1": "The clerk", "label": 1, "group": "a", "context_condition": "ambig", "meta": {"tags": ["y"]}},
    {"id": 3, "context": "A baker and a tailor met.", "question": "Who was tired?", "ans0": "The baker",
     "ans1": "The tailor", "label": 0, "group": "b", "context_condition": "disambig", "meta": {"tags": []}},
]
TINY_STATS = "group\tshare\na\t0.25\nb\t0.75\n"


def _tiny_items_bytes() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in TINY_ITEMS).encode("utf-8")


TINY_ITEMS_SHA256 = hashlib.sha256(_tiny_items_bytes()).hexdigest()
TINY_STATS_SHA256 = hashlib.sha256(TINY_STATS.encode("utf-8")).hexdigest()


def make_tiny_data_root(base: Path) -> Path:
    """``base/data`` with ``tiny/items.jsonl``, ``tiny/stats.tsv``, and ``tiny/outside.jsonl``, a symlink that
    points out of the data root (to ``base/outside/secret.jsonl``)."""
    root = base / "data"
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "tiny" / "items.jsonl").write_bytes(_tiny_items_bytes())
    (root / "tiny" / "stats.tsv").write_bytes(TINY_STATS.encode("utf-8"))
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.jsonl").write_bytes(_tiny_items_bytes())
    link = root / "tiny" / "outside.jsonl"
    if not link.exists():
        link.symlink_to(outside / "secret.jsonl")
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A fresh tiny data root (see ``make_tiny_data_root``)."""
    return make_tiny_data_root(tmp_path)


@pytest.fixture(scope="session")
def tiny_data_session(tmp_path_factory) -> Path:
    return make_tiny_data_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("the shared BBQ/Winogender/law data is not present (set MORALEVAL_DATA)")
    return root


@pytest.fixture
def no_env_data(monkeypatch):
    """No data root from the environment: MORALEVAL_DATA unset, an empty user data directory."""
    monkeypatch.delenv("MORALEVAL_DATA", raising=False)
    monkeypatch.setenv("MORALEVAL_DATA_HOME", os.devnull + "-nonexistent")


BBQ_SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]


@pytest.fixture(scope="session")
def bbq_six(shared_data):
    """`moraleval plan specs/bbq.me --set categories=<the six present files>`, run once in-process: its exit code,
    stdout, stderr, and the CheckedSpec and Plan it made (captured around ``cli.load_plan``)."""
    import contextlib
    import io

    from moraleval import cli

    made = {}
    original = cli.load_plan

    def capture(*args, **kwargs):
        made["checked"], made["plan"] = original(*args, **kwargs)
        return made["checked"], made["plan"]

    out, err = io.StringIO(), io.StringIO()
    cli.load_plan = capture
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["plan", str(SPECS / "bbq.me"), "--data", str(shared_data),
                             "--set", "categories=" + ",".join(BBQ_SIX)])
    finally:
        cli.load_plan = original
    return code, out.getvalue(), err.getvalue(), made.get("checked"), made.get("plan")
