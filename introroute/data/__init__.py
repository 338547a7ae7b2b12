"""Offline: routing-log data, the input of every other offline tool.

The record schema, JSONL I/O, importers of public logs, benchmark loaders, graders, splits, the
self-labelling pipeline, and logs loaded, merged and selected for training, evaluation and
replay (:mod:`introroute.data.records`).

May import: the online packages (a local model answers when labelling; torch is imported only
then) and :mod:`introroute.evaluation.metrics` (confidence intervals). Submodules are imported
explicitly (``from introroute.data.schema import RoutingRecord``).
"""
