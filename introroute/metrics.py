"""Moved to :mod:`introroute.evaluation.metrics`; this alias serves ``data/stats.py`` until its
import follows (it was being edited in parallel). Delete it then.
"""

from introroute.evaluation.metrics import wilson_interval

__all__ = ["wilson_interval"]
