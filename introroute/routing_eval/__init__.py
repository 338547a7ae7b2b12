"""Offline: how well a policy would have routed a log (``introroute eval --routing``).

:mod:`~introroute.routing_eval.replay` runs policies over a log joined with a scorer's
predictions (policies are pure functions of the scores, so every knob's quality, cost and
latency is exact, without calling a model); :mod:`~introroute.routing_eval.metrics` holds the
literature's measures (deferral curves, APGR, CPT, AIQ, savings at matched quality);
:mod:`~introroute.routing_eval.report` assembles and writes the routing report.

May import: the online packages (the policies it replays), :mod:`introroute.data` and
:mod:`introroute.evaluation`.
"""
