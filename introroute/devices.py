"""Device and dtype names accepted everywhere a model is placed: Python API, CLI, router YAML.

Kept free of torch so the router's config validation and ``introroute --help`` stay instant; the
loader (:func:`introroute.gatekeeper.loading.resolve_device`) checks the device really exists.
"""

from __future__ import annotations

import argparse
import re

# spelling -> canonical torch dtype name
DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def check_dtype(name: str) -> str:
    """``name`` if it is a dtype spelling introroute accepts, else a ValueError listing them."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPE_NAMES)}")
    return name


def check_device(name: str) -> str:
    """``name`` if it has the form of a device introroute places models on, else a ValueError."""
    if not DEVICE_PATTERN.match(name):
        raise ValueError(f"device {name!r} is not cpu, cuda, cuda:N or mps")
    return name


def _device_argument(name: str) -> str:
    try:
        return check_device(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, as the score and train commands take them."""
    parser.add_argument("--device", default="cpu", type=_device_argument, help="cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPE_NAMES),
        help="float32 (default; the precision the bit-exactness tests hold in), bfloat16 or float16",
    )
