"""The README's "More" commands, run in the order written on a fresh machine (no MORALEVAL_DATA, an empty user
data directory): check, plan on the shipped sample, data fetch (from a local server standing in for GitHub,
serving the pinned BBQ files this machine has), plan on two fetched categories."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from moraleval.cli import main

from _support import REPO

README = REPO / "README.md"


def more_commands() -> list[list[str]]:
    section = README.read_text(encoding="utf-8").split("## More", 1)[1]
    return [shlex.split(m) for m in re.findall(r"^- `(moraleval [^`]+)`", section, re.M)]


def test_the_readme_lists_the_first_commands_in_a_working_order():
    cmds = [c[1:3] for c in more_commands()]
    assert cmds[0] == ["check", "specs/*.me"]
    assert cmds[1] == ["plan", "specs/bbq.me"] and "builtin:sample" in more_commands()[1]
    fetch = cmds.index(["data", "fetch"])
    plan_full = next(i for i, c in enumerate(more_commands()) if "categories=Age,Religion" in " ".join(c))
    assert fetch < plan_full  # the full categories are planned only after they are fetched


@pytest.mark.slow
def test_readme_commands_in_order_on_a_fresh_machine(shared_data, no_env_data, httpserver, tmp_path, monkeypatch,
                                                     capsys):
    user_data = tmp_path / "user-data"
    monkeypatch.setenv("MORALEVAL_DATA_HOME", str(user_data))
    monkeypatch.chdir(REPO)
    commit = "bea11bd97d79217245b5871acd247b9d6eb24598"
    for category in ("Age", "Religion"):
        httpserver.expect_request(f"/nyu-mll/BBQ/{commit}/data/{category}.jsonl").respond_with_data(
            (shared_data / "bbq" / f"{category}.jsonl").read_bytes())
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/").rstrip("/"))
    for cmd in more_commands():
        args = cmd[1:]
        if args[0] in ("verify", "view", "diff") or args[0].endswith(".me"):
            continue  # a run (slow, the model) and the commands that read its report: tested elsewhere
        if args[:2] == ["check", "specs/*.me"]:
            args = ["check", *sorted(str(p.relative_to(REPO)) for p in (REPO / "specs").glob("*.me"))]
        code = main(args)
        out, err = capsys.readouterr()
        if args[:2] == ["data", "fetch"]:
            # the local origin has only Age and Religion: those arrive, the rest fail with one summary
            assert (user_data / "bbq" / "Age.jsonl").is_file() and (user_data / "bbq" / "Religion.jsonl").is_file()
            assert code == 2 and "Traceback" not in err
            continue
        assert code == 0, (args, err)
        if args[0] == "plan" and "categories=Age,Religion" in args:
            assert f"data root: {user_data} (the user data directory" in out
