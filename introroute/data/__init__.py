"""Routing-log data: the record schema, JSONL I/O, importers of public logs, benchmark loaders,
graders, splits and the self-labelling pipeline.

Submodules are imported explicitly (``from introroute.data.schema import RoutingRecord``); torch
is imported only when a local model answers.
"""
