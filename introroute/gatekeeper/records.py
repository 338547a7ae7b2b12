"""Moved to :mod:`introroute.data.records`; this alias serves ``data/label_command.py`` and
``tests/test_data_labelling.py`` until their imports follow (they were being edited in parallel).
Delete it then: the gatekeeper itself must not import the data layer.
"""

from introroute.data.records import load_log, load_logs, select

__all__ = ["load_log", "load_logs", "select"]
