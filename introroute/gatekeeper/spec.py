"""Which gatekeeper model to load and where: one spec for the CLI commands and the router YAML.

The knobs that place a model (base, adapter, context, threads, prefix cache, device, dtype) used to
be listed by hand at every call site; :class:`ModelSpec` names them once, :func:`add_model_arguments`
turns them into the flags ``serve``, ``score``, ``train`` and ``eval`` share, and
:meth:`ModelSpec.load` is the one loader. Torch-free until :meth:`~ModelSpec.load`, so building a
parser or validating a router config stays instant.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from introroute.devices import add_device_arguments

if TYPE_CHECKING:
    from introroute.gatekeeper.model import IntroLM

BASE_HELP = "base model: smollm2-135m-instruct, gemma-3-270m, a .gguf file or an HF directory"


@dataclass(frozen=True)
class ModelSpec:
    """How to load an IntroLM: the arguments of :meth:`IntroLM.from_pretrained`, as one value.

    Args:
        adapter: adapter directory; ``None``: the adapter shipped for ``base``, if any (else an
            untrained gatekeeper).
        base: packaged model name, HF directory or ``.gguf`` path; ``None``: the adapter's base
            (``smollm2-135m-instruct`` without an adapter).
        max_context: longest prompt in tokens (longer ones are left-truncated); ``None``: the
            adapter's.
        threads: torch CPU threads; ``None``: torch's default.
        prefix_cache: score on the chat template head's KV cache, prefilled once; ``None``: the
            adapter's setting.
        device: cpu, cuda, cuda:N or mps.
        dtype: float32 (the precision the bit-exactness tests hold in), bfloat16 or float16.
    """

    adapter: str | None = None
    base: str | None = None
    max_context: int | None = None
    threads: int | None = None
    prefix_cache: bool | None = None
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: object) -> ModelSpec:
        """The spec from parsed flags; a flag a command does not take keeps the default.

        ``overrides`` replace flag values (``eval`` names one adapter per ``--scorer``).
        """
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**(values | overrides))  # type: ignore[arg-type]

    def load(self) -> IntroLM:
        """The IntroLM this spec describes (imports torch and loads the weights)."""
        from introroute.gatekeeper.model import IntroLM

        return IntroLM.from_pretrained(
            self.adapter,
            base=self.base,
            max_context=self.max_context,
            threads=self.threads,
            prefix_cache=self.prefix_cache,
            device=self.device,
            dtype=self.dtype,
        )


#: The router YAML's ``gatekeeper`` fields that place a local model: exactly the spec's.
MODEL_FIELDS = frozenset(field.name for field in fields(ModelSpec))


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    adapter: bool = True,
    base: bool = True,
    max_context: bool = True,
    prefix_cache: bool = True,
    base_help: str = BASE_HELP,
    threads_help: str = "torch CPU threads (default: torch's own)",
) -> None:
    """The :class:`ModelSpec` flags a command takes: ``--device``/``--dtype``/``--threads`` always,
    the others unless switched off (``eval`` names adapters per ``--scorer``, ``train`` starts from
    ``--from-adapter``). Flags left out keep the spec's defaults in :meth:`ModelSpec.from_args`."""
    if adapter:
        parser.add_argument("--adapter", help="adapter directory (default: the shipped adapter, if any)")
    if base:
        parser.add_argument("--base", help=base_help)
    add_device_arguments(parser)
    if max_context:
        parser.add_argument(
            "--max-context", type=int, help="prompt tokens kept (longer prompts are truncated)"
        )
    parser.add_argument("--threads", type=int, help=threads_help)
    if prefix_cache:
        parser.add_argument(
            "--prefix-cache",
            action=argparse.BooleanOptionalAction,
            help="reuse the chat template head's KV cache across requests (default: the adapter's setting)",
        )
