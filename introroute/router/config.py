"""Router configuration: the pydantic v2 schema, and :func:`load_config` that validates a file against it.

Reading the file (size and depth limits, ``${ENV_VAR}`` substitution, error lines that name the
key path) is :mod:`introroute.router.config_file`'s job.

Why strict: a typo in a routing config (``fallback:`` for ``fallbacks:``, ``tua`` for ``tau``)
would otherwise silently route every request to the wrong tier. Unknown keys are errors, and every
error names the file, the key path (``tiers[1].litellm_params.api_base``) and what was expected,
without echoing values, which may be secrets.

Schema (YAML)::

    name: default                     # served as litellm model "introroute/default"
    gatekeeper:                       # optional; lazily loaded IntroLM
      backend: local                  # or http (introroute serve at url: no torch here),
                                      # llama_cpp (llama-server at url + export), pkg.mod:factory
      url: null                       # http / llama_cpp: the server's address
      base: smollm2-135m-instruct     # packaged name, HF directory or .gguf path
      adapter: null                   # adapter directory (null: the packaged default)
      max_context: 2048
      threads: 1                      # torch threads per forward (2 thrash under concurrent callers)
      prefix_cache: true              # reuse the chat template head's KV cache (null: the adapter's)
      device: cpu                     # cpu, cuda, cuda:N or mps
      dtype: float32                  # float32, bfloat16 or float16 (bf16 halves a GPU's memory)
      timeout_ms: auto                # scoring budget (queue + forward); over it -> fail_safe tier
                                      # auto: measured at load to fit budget_callers requests;
                                      # a number of ms (required with url)
      budget_callers: 16              # with timeout_ms: auto, simultaneous requests the budget fits
      max_generations: 1              # local-tier answers generated at once, beside scoring
      max_batch_size: 8               # concurrent requests scored in one padded forward
      max_wait_ms: 2                  # how long a batch waits for more requests to join
      max_queue: 128                  # requests waiting at most; more are shed to fail_safe
      overload: shed                  # shed: fail_safe at once when the wait would pass the budget
                                      # wait: queue anyway, up to the budget
      load: startup                   # startup: the constructor loads the model; background: it
                                      # does not, and budgeted requests are shed until it is loaded
      calibration:                    # optional; per gatekeeper target (introroute.router.calibration)
        gpt-4-1106-preview: {method: platt, a: 0.8, b: -0.3}
        self: {method: isotonic, x: [0.1, 0.5, 0.9], y: [0.05, 0.4, 0.8]}
    tiers:                            # ordered cheap -> expensive
      - name: local
        target: self                  # gatekeeper target whose probability this tier uses
        # no litellm_params: served in-process from the gatekeeper's prefill
      - name: large
        target: gpt-4-1106-preview
        litellm_params: {model: openai/gpt-4o, api_key: "${OPENAI_API_KEY}", timeout: 30}
        price: {input_per_1m: 2.5, output_per_1m: 10}   # default: litellm.model_cost
        latency: {ttft_ms: 400, per_output_token_ms: 15}
        modalities: [text, image]     # input kinds it reads; default: text (local), any (remote)
    policy: {type: threshold, params: {tau: 0.5}}       # or cost_aware, budget, "pkg.mod:Class"
    retries: {attempts: 3, backoff: {initial_s: 0.5, max_s: 8, retry_after_max_s: 30},
              errors: [Timeout, InternalServerError]}
    fallbacks: {local: large}         # tier -> tier or list of tiers, tried after retries
    fail_safe: large                  # default: the last tier
    routing_log: routing.jsonl        # JSONL records (relative to the working dir); null: off
    log_prompts: false                # also log prompt and answer text (default: a hash id only)
    audit: {share: 0.05, tier: large} # also ask `large` for 5% of the requests cheaper tiers answered

Checked at load, so a config cannot silently misroute: every tier ``target`` is a head of the
configured adapter (read from its ``introroute.json``), every tier ``model`` resolves to a LiteLLM
provider, and YAML aliases may not expand past :data:`MAX_YAML_NODES` values. Secrets
(``api_key``, ``extra_headers`` values, credentials in ``api_base``, any ``*_key``/``*_token``/
``*_secret`` parameter) are secret types: masked in reprs and dumps, revealed only to LiteLLM.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import litellm
from litellm.types.utils import all_litellm_params
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)

from introroute.devices import check_device, check_dtype
from introroute.errors import ConfigError, PolicyError
from introroute.gatekeeper.spec import MODEL_FIELDS, ModelSpec
from introroute.policies import TierInfo, build_policy
from introroute.router import head_check
from introroute.router.backends import BACKENDS, Backend, backend_named, section_fields
from introroute.router.calibration import CalibrationConfig
from introroute.router.config_file import MAX_YAML_DEPTH as MAX_YAML_DEPTH  # re-exported
from introroute.router.config_file import MAX_YAML_NODES as MAX_YAML_NODES  # re-exported
from introroute.router.config_file import check_size, describe, read_yaml, substitute
from introroute.router.secrets import MASK, Redactor, SecretUrl, url_secrets

_NAME = r"^[A-Za-z0-9_.-]+$"
# LiteLLM parameters whose string values are credentials (client_secret, azure_ad_token...).
logger = logging.getLogger(__name__)
_SECRET_PARAM = re.compile(
    r"(?i)(api_key|secret|password|credential|access_key|signing_key|ingestion_key|(^|_)token$)"
)
_NOT_SECRET = frozenset({"bos_token", "eos_token"})  # prompt-template strings, not credentials

Modality = Literal["text", "image", "audio", "file", "video"]

# Keys LiteLLM accepts in a call besides the per-request ones the router fills in itself.
_LITELLM_KEYS = (set(inspect.signature(litellm.completion).parameters) | set(all_litellm_params)) - {
    "messages",
    "stream",
    "kwargs",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatekeeperConfig(_Strict):
    """How to build the gatekeeper and serve concurrent requests with it.

    ``backend`` (:mod:`introroute.router.backends`) says where the scores come from, and with it
    which fields apply: ``local`` (IntroLM in this process: ``base``/``adapter``/``max_context``/
    ``threads``/``prefix_cache``/``device``/``dtype``), ``http`` (``introroute serve`` at ``url``;
    the process never loads torch, ``timeout_ms`` bounds each HTTP call as a whole, ``api_key`` is
    the server's key), ``llama_cpp`` (llama-server at ``url`` serving ``export``) or
    ``module:factory``. A field of another backend is an error. See
    :mod:`introroute.router.gatekeeping` for the batching, admission and loading behaviour.
    """

    backend: str | None = Field(
        default=None,
        description="local (IntroLM in process), http (introroute serve at url), llama_cpp (llama-server "
        "at url serving an 'introroute export --format gguf-alora' export: score and local answer) or "
        "module:factory (a callable returning a Scorer); null: http when url is set, else local",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+",
        description="backend http: the introroute serve address; backend llama_cpp: llama-server's",
    )
    engine: Literal["introroute", "llama_cpp"] | None = Field(
        default=None,
        deprecated="engine: llama_cpp is backend: llama_cpp now",
        description="deprecated: engine llama_cpp is backend llama_cpp, engine introroute the default",
    )
    export: str | None = Field(
        default=None,
        description="backend llama_cpp: the gguf-alora export directory (its targets, token ids, tokenizer)",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="backend http or llama_cpp: the key the server was started with (introroute serve "
        "--api-key, llama-server --api-key), sent as 'Authorization: Bearer'; use ${ENV_VAR}",
    )
    base: str = Field(
        default="smollm2-135m-instruct", description="packaged model name, HF directory or .gguf path"
    )
    adapter: str | None = Field(default=None, description="adapter directory; null: the packaged default")
    max_context: int | None = Field(
        default=None, gt=0, description="longest prompt in tokens; longer ones are left-truncated"
    )
    threads: int | None = Field(default=None, gt=0, description="torch threads; null: torch's default")
    prefix_cache: bool | None = Field(
        default=None,
        description="score on the chat template head's KV cache, prefilled once (null: the adapter's, on)",
    )
    device: Annotated[str, AfterValidator(check_device)] = Field(
        default="cpu", description="cpu, cuda, cuda:N or mps"
    )
    dtype: Annotated[str, AfterValidator(check_dtype)] = Field(
        default="float32", description="float32, bfloat16 or float16"
    )
    timeout_ms: Annotated[float, Field(gt=0)] | Literal["auto"] | None = Field(
        default=None,
        description="scoring time budget, queueing included; auto: measured at load, twice the time "
        "this machine takes to score budget_callers simultaneous short requests; None: wait for the score",
    )
    budget_callers: int = Field(
        default=16, ge=1, description="with timeout_ms: auto, the simultaneous requests the budget must fit"
    )
    max_batch_size: int = Field(default=8, ge=1, description="requests scored together in one forward")
    max_wait_ms: float = Field(default=2.0, ge=0, description="how long a batch waits for more requests")
    max_queue: int = Field(default=128, ge=1, description="requests waiting at most; more are shed")
    overload: Literal["shed", "wait"] = Field(
        default="shed",
        description="shed: fail_safe at once when the expected wait exceeds timeout_ms; wait: queue anyway",
    )
    load: Literal["startup", "background"] = Field(
        default="startup", description="startup: the router's constructor waits for the model"
    )
    max_generations: int | None = Field(
        default=1,
        ge=1,
        description="local-tier answers generated at once (more wait for a slot); they run beside "
        "scoring, so this bounds how much CPU they take from it; None: no bound",
    )
    calibration: dict[str, CalibrationConfig] | None = Field(
        default=None, description="per-target map applied to the scores before the policy decides"
    )

    @model_validator(mode="after")
    def _fields_belong_to_the_backend(self) -> GatekeeperConfig:
        backend = self._resolve_backend()
        given = self.model_fields_set - {"backend", "engine"}
        stray = sorted((section_fields() - backend.fields) & given)
        local = [name for name in stray if name in MODEL_FIELDS]
        if local:
            raise ValueError(
                f"{local} configure the model of a local gatekeeper; backend {backend.name} owns its "
                "model (with url the server owns them)"
            )
        if stray:
            raise ValueError(f"{stray} do not apply to backend {backend.name}: {self._owners(stray)}")
        missing = sorted(backend.required - given)
        if missing:
            raise ValueError(f"backend {backend.name} needs {' and '.join(missing)}")
        if self.timeout_ms == "auto" and backend.remote:
            raise ValueError(
                f"timeout_ms: auto measures an in-process gatekeeper; backend {backend.name} "
                "(a remote one, with url) needs a number"
            )
        return self

    def _resolve_backend(self) -> Backend:
        """``backend``, filled in from the older spellings (``engine``, ``url`` alone) when left out."""
        engine = self.__dict__["engine"]  # read without the deprecation warning attribute access gives
        if engine is not None:
            message = "gatekeeper.engine is deprecated: write backend: llama_cpp (or leave it out)"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            logger.warning(message)  # a YAML user never sees a DeprecationWarning by default
        implied = "llama_cpp" if engine == "llama_cpp" else ("http" if self.url is not None else "local")
        if self.backend is not None and engine is not None and self.backend != implied:
            raise ValueError(f"engine {engine!r} contradicts backend {self.backend!r}: keep only backend")
        if self.backend is None:
            self.backend = implied
        try:
            return backend_named(self.backend)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("gatekeeper.backend ")) from None

    @staticmethod
    def _owners(names: list[str]) -> str:
        """Which backends read each of ``names`` (for the stray-field message)."""
        owners = {name: [b.name for b in BACKENDS.values() if name in b.fields] for name in names}
        return "; ".join(f"{name} is read by backend {' or '.join(found)}" for name, found in owners.items())

    @property
    def backend_info(self) -> Backend:
        """The :class:`~introroute.router.backends.Backend` this section chose."""
        assert self.backend is not None  # filled in by validation
        return backend_named(self.backend)

    @property
    def budget_s(self) -> float | None:
        """The scoring budget in seconds; ``None`` without one, or while ``auto`` is still unmeasured."""
        return self.timeout_ms / 1000.0 if isinstance(self.timeout_ms, float | int) else None

    def load_introlm(self) -> Any:
        """The local IntroLM this section describes (imports torch: only when it is needed)."""
        return self.model_spec().load()

    def model_spec(self) -> ModelSpec:
        """The :class:`ModelSpec` of this section's local model (the same loader as the CLI's)."""
        return ModelSpec(**self.model_dump(include=MODEL_FIELDS))


class Price(_Strict):
    """USD per one million tokens."""

    input_per_1m: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_1m: float = Field(ge=0, description="USD per million output tokens")


class Latency(_Strict):
    """Linear latency model: time to first token plus time per output token."""

    ttft_ms: float = Field(ge=0, description="time to the first token, ms")
    per_output_token_ms: float = Field(ge=0, description="time per output token, ms")


class LiteLLMParams(BaseModel):
    """Keyword arguments for ``litellm.completion`` that select and authenticate the tier's model.

    Any LiteLLM parameter is allowed (``api_version``, ``extra_headers``, ``mock_response``...);
    names LiteLLM does not know are errors.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="LiteLLM model string, with its provider (openai/gpt-4o)")
    api_base: SecretUrl | None = Field(default=None, description="endpoint URL; credentials in it are secret")
    api_key: SecretStr | None = Field(default=None, description='API key, usually "${ENV_VAR}"')
    timeout: float | None = Field(default=None, gt=0, description="seconds per LiteLLM call")
    extra_headers: dict[str, SecretStr] | None = Field(
        default=None, description="HTTP headers (secret values)"
    )
    headers: dict[str, SecretStr] | None = Field(default=None, description="HTTP headers (secret values)")

    @model_validator(mode="after")
    def _known_keys(self) -> LiteLLMParams:
        extra = self.model_extra or {}
        unknown = sorted(set(extra) - _LITELLM_KEYS)
        if unknown:
            raise ValueError(f"unknown LiteLLM parameter(s) {unknown}")
        for key, value in extra.items():
            if isinstance(value, str) and _SECRET_PARAM.search(key) and key not in _NOT_SECRET:
                extra[key] = SecretStr(value)
        problem = _unresolvable(self.model, extra.get("custom_llm_provider"))
        if problem:
            raise ValueError(problem)
        if self.api_base is None and "mock_response" not in extra:  # an own endpoint serves own names
            unknown = _unknown_to_provider(self.model, extra.get("custom_llm_provider"))
            if unknown:
                logger.warning("%s", unknown)
        return self

    def call_kwargs(self) -> dict[str, Any]:
        """The arguments as ``litellm.completion`` takes them (secrets revealed, unset ones dropped)."""
        kwargs: dict[str, Any] = {"model": self.model}
        kwargs.update({k: _reveal(v) for k, v in (self.model_extra or {}).items()})
        for key in ("api_base", "api_key", "timeout", "extra_headers", "headers"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = _reveal(value)
        return kwargs

    def secret_values(self) -> set[str]:
        """Every credential these parameters carry, for the redactor."""
        values = {_reveal(v) for v in (self.model_extra or {}).values() if isinstance(v, SecretStr)}
        if self.api_key is not None:
            values.add(self.api_key.get_secret_value())
        for headers in (self.extra_headers, self.headers):
            values |= {v.get_secret_value() for v in (headers or {}).values()}
        if self.api_base is not None:
            values |= set(url_secrets(self.api_base.get_secret_value()))
        return values


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    return value


def _unresolvable(model: str, custom_provider: Any) -> str | None:
    """Why LiteLLM cannot route ``model`` (``litellm.get_llm_provider`` raised), or ``None``.

    Why at load: a typo (``gtp-4o``, ``opnai/gpt-4o``) used to load fine and then fail every
    request of that tier, with the reason hidden in the error's ``__cause__``.
    """
    prefix = model.split("/", 1)[0] if "/" in model else None
    registered = {entry.get("provider") for entry in litellm.custom_provider_map}
    if (isinstance(custom_provider, str) and custom_provider in registered) or prefix in registered:
        return None  # a CustomLLM provider (e.g. introroute itself) routes its own model names
    return _provider_problem(model, custom_provider if isinstance(custom_provider, str) else None)


@functools.lru_cache(maxsize=256)
def _provider_problem(model: str, custom_provider: str | None) -> str | None:
    quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True  # it prints otherwise
    try:
        litellm.get_llm_provider(model=model, custom_llm_provider=custom_provider)
    except Exception as exc:
        cause = str(getattr(exc, "message", exc)).strip().splitlines()[0]
        hint = _did_you_mean(model)
        return f"LiteLLM cannot resolve model {model!r}: {cause}{hint}"
    finally:
        litellm.suppress_debug_info = quiet
    return None


@functools.lru_cache(maxsize=256)
def _unknown_to_provider(model: str, custom_provider: Any) -> str | None:
    """Why ``model`` looks like a typo: its provider resolves, LiteLLM's model map lists that
    provider's models, and the name is not among them (``openai/gtp-4o``); ``None`` otherwise.

    A warning, not an error: LiteLLM's map trails the providers' releases, so an unlisted name
    may be a model newer than the installed LiteLLM.
    """
    try:
        name, provider, _, _ = litellm.get_llm_provider(
            model=model, custom_llm_provider=custom_provider if isinstance(custom_provider, str) else None
        )
    except Exception:  # unresolvable models are _unresolvable's error
        return None
    known = set(litellm.models_by_provider.get(provider) or ())
    if not known or name in known or model in litellm.model_cost or f"{provider}/{name}" in known:
        return None
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    hint = f"; did you mean '{provider}/{close[0]}'?" if close else ""
    return (
        f"model {model!r}: {name!r} is not one of LiteLLM's {provider} models{hint} "
        "(calls to it fail if the provider does not serve that name)"
    )


def _did_you_mean(model: str) -> str:
    if "/" in model:
        prefix, rest = model.split("/", 1)
        providers = [str(getattr(p, "value", p)) for p in litellm.provider_list]
        close = difflib.get_close_matches(prefix, providers, n=1)
        return f"; did you mean {close[0] + '/' + rest!r}?" if close else ""
    close = difflib.get_close_matches(model, list(litellm.model_cost), n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else "; prefix it with its provider (openai/...)"


class TierConfig(_Strict):
    """One model the router can send a request to."""

    name: str = Field(pattern=_NAME, description="the tier's name in decisions, fallbacks and fail_safe")
    target: str = Field(description="the gatekeeper head (target) whose probability this tier uses")
    litellm_params: LiteLLMParams | None = Field(default=None, description="null: the local tier, in-process")
    price: Price | None = Field(default=None, description="null: from litellm.model_cost (local: free)")
    latency: Latency | None = Field(default=None, description="latency model for cost_aware and replay")
    modalities: list[Modality] | None = Field(
        default=None, description="input kinds the tier reads; default: text (local), anything (remote)"
    )

    @property
    def local(self) -> bool:
        """A tier without ``litellm_params`` is answered in-process by the gatekeeper's base model."""
        return self.litellm_params is None

    def reads(self) -> frozenset[str] | None:
        """The input kinds this tier reads; ``None``: anything (a remote tier that did not say)."""
        if self.modalities is not None:
            return frozenset(self.modalities)
        return frozenset({"text"}) if self.local else None

    def info(self) -> TierInfo:
        """The policy's view of this tier, with prices from ``litellm.model_cost`` when not configured."""
        price = self.price or _catalog_price(self)
        latency = self.latency
        return TierInfo(
            name=self.name,
            target=self.target,
            local=self.local,
            input_per_1m=price.input_per_1m if price else None,
            output_per_1m=price.output_per_1m if price else None,
            ttft_ms=latency.ttft_ms if latency else None,
            per_output_token_ms=latency.per_output_token_ms if latency else None,
        )


def _catalog_price(tier: TierConfig) -> Price | None:
    if tier.litellm_params is None:
        return Price(input_per_1m=0.0, output_per_1m=0.0)  # in-process: no per-token bill
    model = tier.litellm_params.model
    entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1])
    if not entry or "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
        return None
    return Price(
        input_per_1m=entry["input_cost_per_token"] * 1e6, output_per_1m=entry["output_cost_per_token"] * 1e6
    )


class PolicyConfig(_Strict):
    """``type``: a registered policy name or ``module:Class``; ``params``: its constructor arguments.

    Why ``params`` is masked in reprs and dumps but kept plain: policies take plain values (a
    budget store's ``redis://:password@host`` URL), so the secrets in them are found by shape
    (credentials in URLs, ``*_key``/``*_token``/``password`` keys) and by origin (``${ENV}``).
    """

    type: str = Field(
        default="threshold", description="threshold, cost_aware, budget, a plugin name or module:Class"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the policy's constructor arguments (masked in reprs and dumps)"
    )

    _secrets: frozenset[str] = PrivateAttr(default=frozenset())

    @field_serializer("params")
    def _masked_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return _mask_secrets(params, Redactor(self._secrets))

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "type", self.type
        yield "params", self._masked_params(self.params)

    def secret_values(self) -> set[str]:
        """The credentials in URLs among the params (for the redactor), ``${ENV}`` ones aside."""
        found: set[str] = set()

        def visit(value: Any) -> None:
            if isinstance(value, str) and "://" in value:
                found.update(url_secrets(value))
            elif isinstance(value, Mapping):
                for item in value.values():
                    visit(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    visit(item)

        visit(self.params)
        return found


def _mask_secrets(value: Any, redactor: Redactor, key: str = "") -> Any:
    """``value`` with secret-named keys' values, known secrets and credential-shaped text masked."""
    if isinstance(value, str):
        return MASK if _SECRET_PARAM.search(key) and key not in _NOT_SECRET else redactor.redact_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_secrets(v, redactor, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_secrets(v, redactor) for v in value]
    return value


class Backoff(_Strict):
    """Exponential backoff with jitter between retries (tenacity ``wait_exponential_jitter``)."""

    initial_s: float = Field(default=0.5, ge=0, description="first wait, seconds")
    max_s: float = Field(default=8.0, ge=0, description="longest wait, seconds")
    exp_base: float = Field(default=2.0, ge=1, description="each wait is this times the previous")
    jitter_s: float = Field(default=0.5, ge=0, description="random seconds added to each wait")
    retry_after_max_s: float = Field(
        default=30.0,
        ge=0,
        description="a Retry-After up to this is waited for; a longer one moves to the fallbacks",
    )


def _litellm_error(name: str) -> type[BaseException]:
    cls = getattr(litellm.exceptions, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise ValueError(f"{name!r} is not a litellm exception class (e.g. Timeout, InternalServerError)")
    return cls


def _error_name(name: str) -> str:
    _litellm_error(name)
    return name


class RetryConfig(_Strict):
    """Retries of one tier before its fallbacks; ``errors`` names ``litellm.exceptions`` classes."""

    attempts: int = Field(default=2, ge=1, description="calls per tier, the first included")
    backoff: Backoff = Field(default_factory=Backoff, description="waits between attempts")
    errors: list[Annotated[str, AfterValidator(_error_name)]] = Field(
        description="litellm.exceptions classes that are retried",
        default_factory=lambda: [
            "Timeout",
            "APIConnectionError",
            "InternalServerError",
            "ServiceUnavailableError",
            "BadGatewayError",
            "RateLimitError",
        ],
    )

    def exceptions(self) -> tuple[type[BaseException], ...]:
        """The exception classes that trigger a retry."""
        return tuple(_litellm_error(name) for name in self.errors)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class AuditConfig(_Strict):
    """Send a share of the requests a cheaper tier answered also to a reference tier.

    Why: the routing log then holds both answers for a random sample of the kept-cheap traffic,
    so the live reliability of the cheaper tiers can be judged (``introroute label --judge``) and
    the threshold re-fitted on it (``introroute calibrate``). The reference call runs in the
    background after the caller has its answer, and never changes what the caller gets.
    """

    share: float = Field(gt=0.0, le=1.0, description="share of the eligible requests that are audited")
    tier: str | None = Field(
        default=None, description="the reference tier (a remote one); default: the last tier"
    )
    seed: int | None = Field(default=None, description="seed of the sampling (None: not reproducible)")
    workers: int = Field(default=2, ge=1, description="reference calls in flight at most")


class RouterConfig(_Strict):
    """A whole router: gatekeeper, tiers, policy, retries, fallbacks, fail-safe tier and log."""

    name: str = Field(
        default="default", pattern=_NAME, description="served as LiteLLM model introroute/<name>"
    )
    gatekeeper: GatekeeperConfig | None = Field(
        default=None, description="null: none, unless passed as gatekeeper= in code"
    )
    tiers: list[TierConfig] = Field(min_length=1, description="ordered cheap -> expensive")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="scores -> tier")
    retries: RetryConfig = Field(default_factory=RetryConfig, description="retries of one tier")
    fallbacks: dict[str, Annotated[list[str], BeforeValidator(_as_list)]] = Field(
        default_factory=dict, description="tier -> tier(s) tried after its retries fail"
    )
    fail_safe: str | None = Field(
        default=None, description="tier used when scoring fails or is shed; null: the last"
    )
    routing_log: str | None = Field(default=None, description="JSONL file of routing records; null: off")
    log_prompts: bool = Field(
        default=False,
        description="also write each prompt and answer as text to the routing log (off: only a "
        "SHA-256 id of the prompt); needed to label, train or audit from the log",
    )
    audit: AuditConfig | None = Field(
        default=None, description="audit sampling: kept-cheap requests also answered by a reference tier"
    )

    _secrets: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _tier_references(self) -> RouterConfig:
        names = [t.name for t in self.tiers]
        expected = f"expected one of {names}"
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: tier names must be unique, got {names}")
        if sum(t.local for t in self.tiers) > 1:
            raise ValueError("tiers: at most one tier may omit litellm_params (the in-process local tier)")
        for source, targets in self.fallbacks.items():
            if source not in names:
                raise ValueError(f"fallbacks.{source}: unknown tier; {expected}")
            for target in targets:
                if target not in names or target == source:
                    raise ValueError(f"fallbacks.{source}: {target!r} is not another tier; {expected}")
        if self.fail_safe is not None and self.fail_safe not in names:
            raise ValueError(f"fail_safe: unknown tier {self.fail_safe!r}; {expected}")
        backend = self.gatekeeper.backend_info if self.gatekeeper is not None else None
        # a module:factory's scorer is checked when the router builds it (a LocalModel or not)
        if backend is not None and backend.generates is False and any(t.local for t in self.tiers):
            kind = "a remote gatekeeper" if backend.remote else "this gatekeeper"
            raise ValueError(
                f"gatekeeper.backend {backend.name}: {kind} cannot generate, so no tier may omit "
                "litellm_params"
            )
        # An error, not a warning: a calibrated target no tier uses is almost always a misspelt
        # target name, and the target that was meant would silently stay uncalibrated.
        targets = sorted({t.target for t in self.tiers})
        calibrated = (self.gatekeeper.calibration if self.gatekeeper else None) or {}
        for target in calibrated:
            if target not in targets:
                raise ValueError(
                    f"gatekeeper.calibration.{target}: no tier uses this target; expected one of {targets}"
                )
        self._check_audit(names)
        return self

    def _check_audit(self, names: list[str]) -> None:
        if self.audit is None:
            return
        if self.routing_log is None or not self.log_prompts:
            raise ValueError("audit: needs routing_log and log_prompts: true (it logs both answers)")
        tier = self.audit.tier or names[-1]
        if tier not in names:
            raise ValueError(f"audit.tier: unknown tier {tier!r}; expected one of {names}")
        if self.tier(tier).local or names.index(tier) == 0:
            raise ValueError(f"audit.tier: {tier!r} must be a remote tier above the cheapest one")

    @property
    def audit_tier(self) -> TierConfig | None:
        """The reference tier of audit sampling, when configured."""
        return self.tier(self.audit.tier or self.tiers[-1].name) if self.audit else None

    @property
    def fail_safe_tier(self) -> str:
        """The tier used when scoring fails: ``fail_safe``, or the last (most capable) tier."""
        return self.fail_safe or self.tiers[-1].name

    def tier(self, name: str) -> TierConfig:
        """The tier called ``name`` (names are validated unique)."""
        return next(t for t in self.tiers if t.name == name)

    def secrets(self) -> frozenset[str]:
        """Every value that must never be emitted: ``${ENV}`` substitutions and tier credentials."""
        keys = {v for t in self.tiers if t.litellm_params for v in t.litellm_params.secret_values()}
        if self.gatekeeper is not None and self.gatekeeper.api_key is not None:
            keys.add(self.gatekeeper.api_key.get_secret_value())
        return self._secrets | keys | self.policy.secret_values()


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any], *, check_heads: bool = True
) -> RouterConfig:
    """Load and validate a router config from a YAML file or an already-parsed mapping.

    ``${VAR}`` in any string is replaced by the environment variable (an unset one is an error).
    The policy is instantiated once to validate its parameters. With ``check_heads`` (default),
    every tier target must be a head of the configured adapter when that adapter exists;
    :class:`~introroute.Router` passes ``False`` when it is given its gatekeeper and checks
    against that one instead. Raises :class:`ConfigError`.
    """
    if isinstance(source, Mapping):
        origin, data = "<config>", dict(source)
    else:
        origin, data = str(source), read_yaml(Path(source))
    check_size(data, origin)
    secrets: set[str] = set()
    data = substitute(data, origin, "", secrets)
    redactor = Redactor(secrets)  # a message may quote a substituted value (a model name, a path)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(describe(origin, err, RouterConfig) for err in exc.errors())
        raise ConfigError(redactor.redact(problems)) from None
    config._secrets = config.policy._secrets = frozenset(secrets)
    try:
        build_policy(config.policy.type, dict(config.policy.params))
    except PolicyError as exc:
        raise ConfigError(redactor.redact(f"{origin}: policy: {exc}")) from None
    # a remote gatekeeper owns its adapter (its heads are the server's) and a factory's are known
    # once it is built (Router checks those)
    if check_heads and config.gatekeeper is not None and config.gatekeeper.backend_info.owns_heads:
        try:
            known = head_check.configured_heads(config.gatekeeper)
            if known is not None:
                head_check.check_targets(config, known, origin)
        except ConfigError as exc:
            message = str(exc)
            message = message if message.startswith(origin) else f"{origin}: {message}"
            raise ConfigError(redactor.redact(message)) from None
    return config
