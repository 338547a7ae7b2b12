"""Where the public data and the vendored logs live.

Why an env var: the raw benchmark folder (``../shared/data`` next to a checkout) is a local
convenience, not part of the package. Importers and the labeller read it; everything that ships
(training, evaluation, tests) reads the vendored files under :data:`VENDORED_DIR` instead.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from introroute.data.splits import DEFAULT_SEED
from introroute.errors import DataError

ENV_VAR = "INTROROUTE_DATA"
VENDORED_DIR = Path(__file__).resolve().parent / "vendored"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$INTROROUTE_DATA``, else ``<repo>/../shared/data``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def require(path: Path) -> Path:
    """``path`` if it exists, else a :class:`DataError` that says how to point at the data."""
    if not path.exists():
        raise DataError(f"{path}: not found (set {ENV_VAR} to the folder that holds the public data)")
    return path


def vendored_path(name: str) -> Path:
    """The committed log ``name`` (``routellm_mmlu``, ``routellm_gsm8k``, ``routerbench``)."""
    return require(VENDORED_DIR / f"{name}.jsonl.gz")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-root`` and ``--split-seed``, shared by the commands that read the public data."""
    parser.add_argument(
        "--data-root", type=Path, help=f"public data folder (default: ${ENV_VAR}, else ../shared/data)"
    )
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SEED, help="seed of the split assignment")


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log``, the same in every command that reads routing logs (``load_logs`` merges them)."""
    parser.add_argument(
        "--log",
        action="extend",
        nargs="+",
        required=True,
        help="routing-log JSONL(.gz) path(s), or vendored log name(s); several are merged by query id",
    )
