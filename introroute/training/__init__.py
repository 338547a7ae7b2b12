"""Offline: fit scorers on routing logs.

:mod:`~introroute.training.gatekeeper` trains IntroLM's heads and activated LoRA (``introroute
train``); :mod:`~introroute.training.baselines` fits the external classifiers it is compared
with (``introroute baseline``). Nothing here runs on a routed request.

May import: the online packages (the gatekeeper it trains), :mod:`introroute.data` and
:mod:`introroute.evaluation.metrics` (validation AUC). The request path never imports this
package, so scikit-learn and the training loops stay out of a routing process.
"""
