"""``introroute serve``: the gatekeeper as an HTTP service that batches concurrent requests.

The model loads before the server listens, so ``GET /health`` answering means ready. Routers (and
the LiteLLM Proxy plugin) use it with ``gatekeeper: {url: http://HOST:PORT}`` and never load torch.
``--scorer pkg.mod:factory`` serves any other :class:`~introroute.scoring.Scorer` (a baseline, a
test double) instead of IntroLM.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pydantic import ValidationError

from introroute.errors import ConfigError
from introroute.gatekeeper.spec import ModelSpec, add_model_arguments
from introroute.server.options import API_KEY_ENV, ServeOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port to listen on")
    add_model_arguments(parser)
    parser.add_argument("--scorer", help="serve 'pkg.module:factory' (a callable returning a Scorer) instead")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        help="requests per forward at most (default: the router's, gatekeeper.max_batch_size)",
    )
    parser.add_argument("--max-batch", type=int, help="deprecated name of --max-batch-size")
    parser.add_argument(
        "--max-wait-ms", type=float, help="how long a batch waits for more requests (default: the router's)"
    )
    parser.add_argument(
        "--max-queue", type=int, help="waiting requests beyond this get a 503 (default: the router's)"
    )
    limits = ServeOptions.model_fields
    for flag, field in (
        ("--max-body-bytes", "max_body_bytes"),
        ("--max-messages", "max_messages"),
        ("--max-chars", "max_chars"),
        ("--request-timeout-s", "request_timeout_s"),
        ("--keep-alive-s", "keep_alive_s"),
    ):
        info = limits[field]
        parser.add_argument(
            flag,
            type=info.annotation,
            default=info.default,
            help=f"{info.description} (default {info.default})",
        )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on /score and /metrics (default: ${API_KEY_ENV}; "
        "prefer the variable: a flag shows in the process list)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="server log level",
    )


def load_scorer(args: argparse.Namespace) -> Any:
    """The scorer to serve: ``--scorer``'s factory, else IntroLM from ``--adapter``/``--base``."""
    if args.scorer:
        from introroute.router.backends import scorer_from_factory

        return scorer_from_factory(args.scorer, "--scorer")
    return ModelSpec.from_args(args).load()


def batching_options(args: argparse.Namespace) -> Any:
    """The router's :class:`BatchingOptions` with the flags given (``--max-batch`` still works, with
    a warning); imported here, not at parser time, as the router package imports LiteLLM."""
    from introroute.router.gatekeeping import BatchingOptions

    defaults = BatchingOptions()
    size = args.max_batch_size
    if args.max_batch is not None:
        print("introroute serve: --max-batch is deprecated; use --max-batch-size", file=sys.stderr)
        size = args.max_batch if size is None else size
    options = BatchingOptions(
        max_batch_size=defaults.max_batch_size if size is None else size,
        max_wait_s=defaults.max_wait_s if args.max_wait_ms is None else args.max_wait_ms / 1000.0,
        max_queue=defaults.max_queue if args.max_queue is None else args.max_queue,
    )
    if options.max_batch_size < 1 or options.max_queue < 1 or options.max_wait_s < 0:
        raise ConfigError("--max-batch-size and --max-queue must be >= 1, --max-wait-ms >= 0")
    return options


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """The per-client limits and the API key from the flags, validated."""
    try:
        return ServeOptions(
            max_body_bytes=args.max_body_bytes,
            max_messages=args.max_messages,
            max_chars=args.max_chars,
            request_timeout_s=args.request_timeout_s,
            keep_alive_s=args.keep_alive_s,
            api_key=args.api_key or None,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"introroute serve: {problems}") from None


def main(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from introroute.server.app import create_app
        from introroute.server.http import uvicorn_config
    except ImportError as exc:
        raise ConfigError(
            f"introroute serve needs fastapi and uvicorn: pip install 'introroute[serve]' ({exc})"
        ) from None
    batching, options = batching_options(args), serve_options(args)
    scorer = load_scorer(args)
    app = create_app(scorer, batching=batching, options=options)
    print(
        f"introroute serve: {type(scorer).__name__} targets={list(scorer.targets)} "
        f"on http://{args.host}:{args.port} (api key {'required' if options.api_key else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port, log_level=args.log_level)).run()
    return 0
