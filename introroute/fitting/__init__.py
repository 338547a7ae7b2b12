"""Offline: fit a router to a stated target on logs and write the result into its YAML
(``introroute calibrate``).

:mod:`~introroute.fitting.knob` fits a policy's knob (``tau``, ``lam``) to a reliability,
share, cost or PGR target; :mod:`~introroute.fitting.calibration` fits a score recalibration
(scikit-learn), which the router applies per request through
:mod:`introroute.router.calibration`; :mod:`~introroute.fitting.config_edit` loads router YAML
without API keys and edits it keeping comments.

May import: the online packages, :mod:`introroute.data`, :mod:`introroute.evaluation` and
:mod:`introroute.routing_eval`.
"""
