"""``introroute export``: write a trained gatekeeper in a format an inference engine serves.

``--format gguf-alora``: llama.cpp's base GGUF (vocabulary grown by ``[INTRO]`` and, for a linear
head, its score rows) and an activated-LoRA GGUF, served by ``llama-server -m base.gguf --lora
alora.gguf`` and scored by the ``llama_cpp`` gatekeeper engine (docs/engine.md).
``--format plain``: the no-LoRA gatekeeper as an HF model + head, for a hidden-state engine (vLLM).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from introroute.errors import ConfigError
from introroute.gatekeeper.spec import ModelSpec, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["gguf-alora", "plain"], required=True)
    add_model_arguments(parser, max_context=False, prefix_cache=False)
    parser.add_argument(
        "--base-gguf",
        type=Path,
        help="gguf-alora: llama.cpp's GGUF of the base model (default: the packaged base's own GGUF, "
        "or the base itself when it is a .gguf file)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write")


def main(args: argparse.Namespace) -> int:
    from introroute.gatekeeper.export import export_plain
    from introroute.gatekeeper.gguf_alora import export_gguf_alora

    gk = ModelSpec.from_args(args).load()
    if args.format == "plain":
        print(export_plain(gk, args.out))
        return 0
    print(export_gguf_alora(gk, args.out, args.base_gguf or _base_gguf(gk.base_name)))
    return 0


def _base_gguf(base: str) -> Path:
    """The GGUF a base was loaded from: a .gguf path as given, or a packaged model's own file."""
    from introroute.gatekeeper.loading import PACKAGED, packaged_gguf

    if base.endswith(".gguf") and Path(base).is_file():
        return Path(base)
    if base in PACKAGED and PACKAGED[base].filename is not None:
        return packaged_gguf(base)
    raise ConfigError(f"base {base!r} has no GGUF file here: pass --base-gguf (llama.cpp's conversion of it)")
