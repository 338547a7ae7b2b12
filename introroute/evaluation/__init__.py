"""Offline: how well scorers predict success (``introroute eval``).

:mod:`~introroute.evaluation.metrics`: ROC/PR-AUC, Brier, ECE and bootstrap CIs, pure
numpy/scipy statistics that imports nothing of introroute, so every offline package may use it.
:mod:`~introroute.evaluation.report`: the gatekeeper-vs-baselines comparison (pooled, per task,
within task, unseen subjects), its report files and plots.

May import: the online packages and :mod:`introroute.data`.
"""
