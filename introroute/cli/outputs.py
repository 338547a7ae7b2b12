"""Outputs of offline commands that never lose work: checked first, written whole, or not at all.

Why: ``train`` runs for hours and ``eval`` scores thousands of prompts; an output path that cannot
be written must fail before that work, not after it, and an interrupted run (SIGINT, a crash)
must leave either the previous output or the new one, never a mix of the two (new weights next
to the previous run's ``training_history.json``). So every command that writes a file or a
directory (``train``, ``eval``, ``calibrate``):

1. calls :func:`check_output` before any work: an existing non-empty output needs
   ``--overwrite``, and the nearest existing parent must be a writable directory;
2. writes into a temporary sibling (:func:`atomic_dir`, :func:`write_text_atomically`) and
   renames it over the output once complete; the sibling is removed if the work fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from introroute.errors import OutputError


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an existing output (default: refuse, before any work)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (default: refuse an existing non-empty output before any work)",
    )


def check_output(path: Path, *, overwrite: bool, directory: bool = False, flag: str = "--out") -> None:
    """Raise :class:`OutputError` unless ``path`` can be written as the command's output."""
    if path.exists() or path.is_symlink():
        if directory != path.is_dir():
            kind = "a directory" if directory else "a file"
            raise OutputError(f"{flag} {path}: exists and is not {kind}")
        non_empty = any(path.iterdir()) if directory else path.stat().st_size > 0
        if non_empty and not overwrite:
            raise OutputError(f"{flag} {path}: exists and is not empty; pass --overwrite to replace it")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {parent} is not writable")


def _sibling(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make = tempfile.mkdtemp if kind == "dir" else tempfile.mkstemp
    made = make(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    if isinstance(made, tuple):
        os.close(made[0])
        made = made[1]
    umask = os.umask(0)  # temp files are private (0600/0700); the output gets the usual mode
    os.umask(umask)
    os.chmod(made, (0o777 if kind == "dir" else 0o666) & ~umask)
    return Path(made)


def _replace(source: Path, path: Path) -> None:
    """Rename ``source`` over ``path``; a directory in the way is moved aside first, then removed."""
    if path.is_dir() and not path.is_symlink():
        aside = _sibling(path, "dir")
        os.replace(path, aside / path.name)
        os.replace(source, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; it becomes ``path`` when the block ends
    without an exception, and is removed when it raises (KeyboardInterrupt included)."""
    work = _sibling(path, "dir")
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _replace(work, path)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it over ``path`` (readers never see half)."""
    work = _sibling(path, "file")
    try:
        work.write_text(text, encoding="utf-8")
        _replace(work, path)
    except BaseException:
        work.unlink(missing_ok=True)
        raise
