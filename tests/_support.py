"""Constants and helpers shared by the spec-language tests (a module of its own: test files cannot import
`conftest`, since tests/ and tests/backends/ each have one)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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

BBQ_SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
