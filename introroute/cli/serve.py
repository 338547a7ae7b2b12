"""``introroute serve``: the gatekeeper as an HTTP service that batches concurrent requests.

The model loads before the server listens, so ``GET /health`` answering means ready. Routers (and
the LiteLLM Proxy plugin) use it with ``gatekeeper: {url: http://HOST:PORT}`` and never load torch.
``--scorer pkg.mod:factory`` serves any other :class:`~introroute.scoring.Scorer` (a baseline, a
test double) instead of IntroLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from introroute.devices import add_device_arguments
from introroute.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port to listen on")
    parser.add_argument("--adapter", help="adapter directory (default: the shipped adapter, if any)")
    parser.add_argument(
        "--base", help="base model: smollm2-135m-instruct, gemma-3-270m, a .gguf file or an HF directory"
    )
    add_device_arguments(parser)
    parser.add_argument("--max-context", type=int, help="prompt tokens kept (longer prompts are truncated)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--prefix-cache",
        action=argparse.BooleanOptionalAction,
        help="reuse the chat template head's KV cache across requests (default: the adapter's setting)",
    )
    parser.add_argument("--scorer", help="serve 'pkg.module:factory' (a callable returning a Scorer) instead")
    parser.add_argument("--max-batch", type=int, default=16, help="requests per forward at most")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with"
    )
    parser.add_argument("--max-queue", type=int, default=256, help="queued requests beyond this get a 503")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="server log level",
    )


def load_scorer(args: argparse.Namespace) -> Any:
    """The scorer to serve: ``--scorer``'s factory, else IntroLM from ``--adapter``/``--base``."""
    if args.scorer:
        module_name, _, attr = args.scorer.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"--scorer {args.scorer!r}: expected 'package.module:factory'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--scorer {args.scorer!r}: cannot import: {exc}") from exc
        return factory()
    from introroute.gatekeeper import IntroLM

    return IntroLM.from_pretrained(
        args.adapter,
        base=args.base,
        max_context=args.max_context,
        threads=args.threads,
        prefix_cache=args.prefix_cache,
        device=args.device,
        dtype=args.dtype,
    )


def main(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from introroute.server.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"introroute serve needs fastapi and uvicorn: pip install 'introroute[serve]' ({exc})"
        ) from None
    scorer = load_scorer(args)
    app = create_app(scorer, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)
    print(
        f"introroute serve: {type(scorer).__name__} targets={list(scorer.targets)} "
        f"on http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
