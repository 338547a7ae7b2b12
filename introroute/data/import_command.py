"""``introroute import-logs``: turn the public RouteLLM / RouterBench logs into routing-log JSONL.

The default output is the package's vendored folder, so rerunning it regenerates exactly the
committed files (gzip output is byte-reproducible) and a diff shows any change in the labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from introroute.data.importers import IMPORTERS
from introroute.data.jsonl import write_records
from introroute.data.paths import VENDORED_DIR, add_source_arguments, data_root
from introroute.data.stats import accuracy_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``introroute import-logs``."""
    parser.add_argument(
        "--sources", nargs="+", choices=sorted(IMPORTERS), default=sorted(IMPORTERS), help="logs to import"
    )
    add_source_arguments(parser)
    parser.add_argument("--out-dir", type=Path, default=VENDORED_DIR, help="where <source>.jsonl.gz files go")


def main(args: argparse.Namespace) -> int:
    """Import each source, write ``<out-dir>/<source>.jsonl.gz``, print accuracy per target."""
    root = data_root(args.data_root)
    for source in args.sources:
        start = time.perf_counter()
        records = IMPORTERS[source](root, args.split_seed)
        path = args.out_dir / f"{source}.jsonl.gz"
        write_records(path, records)
        elapsed = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        print(f"{source}: {len(records)} records -> {path} ({size_mb:.1f} MB, {elapsed:.1f} s)")
        for dataset, targets in accuracy_table(records).items():
            for target, row in targets.items():
                missing = f", {row['missing']} missing" if row["missing"] else ""
                print(f"  {dataset:28s} {target:40s} acc {row['accuracy']:.3f} (n={row['n']}{missing})")
    return 0
