"""The gatekeeper as its own HTTP service (``introroute serve``) and the client routers use to call it.

Why a separate service: a LiteLLM Proxy (or any routing process) that loads torch and a model pays
seconds of start-up and hundreds of MB per replica, and cannot scale the scorer apart from the
proxy. ``introroute serve`` owns the model and batches concurrent requests into one forward;
routers point ``gatekeeper.url`` at it and stay torch-free (:mod:`introroute.router.remote`).

This package's ``__init__`` imports nothing heavy: the client needs only httpx, the server
(:mod:`introroute.server.app`) needs fastapi and uvicorn (the ``serve`` extra).
"""
