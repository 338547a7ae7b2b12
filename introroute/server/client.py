"""Deprecated location of the remote gatekeeper client: it is :mod:`introroute.router.remote` now.

The client belongs to the router that uses it (the ``http`` gatekeeper backend), not to the server
it talks to; this module keeps old imports working.
"""

import warnings

from introroute.router.remote import (  # noqa: F401 (re-exported for old imports)
    DEFAULT_TIMEOUT_S,
    GatekeeperOverloadedError,
    RemoteGatekeeping,
    RemoteScorer,
)

warnings.warn(
    "introroute.server.client moved to introroute.router.remote; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
