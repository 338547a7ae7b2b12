"""Router configuration: pydantic v2 models and YAML loading with ``${ENV_VAR}`` substitution.

Why strict: a typo in a routing config (``fallback:`` for ``fallbacks:``, ``tua`` for ``tau``)
would otherwise silently route every request to the wrong tier. Unknown keys are errors, and every
error names the file, the key path (``tiers[1].litellm_params.api_base``) and what was expected,
without echoing values, which may be secrets.

Schema (YAML)::

    name: default                     # served as litellm model "introroute/default"
    gatekeeper:                       # optional; lazily loaded IntroLM
      base: smollm2-135m-instruct     # packaged name, HF directory or .gguf path
      adapter: null                   # adapter directory (null: the packaged default)
      max_context: 2048
      threads: 2
      device: cpu                     # cpu, cuda, cuda:N or mps
      dtype: float32                  # float32, bfloat16 or float16 (bf16 halves a GPU's memory)
      timeout_ms: 500                 # over budget -> fail_safe tier
      calibration:                    # optional; per gatekeeper target (introroute.calibration)
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
    policy: {type: threshold, params: {tau: 0.5}}       # or cost_aware, budget, "pkg.mod:Class"
    retries: {attempts: 3, backoff: {initial_s: 0.5, max_s: 8}, errors: [Timeout, InternalServerError]}
    fallbacks: {local: large}         # tier -> tier or list of tiers, tried after retries
    fail_safe: large                  # default: the last tier
    routing_log: routing.jsonl        # JSONL records (relative to the working dir); null: off
"""

from __future__ import annotations

import inspect
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import litellm
import yaml
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
    model_validator,
)

from introroute.calibration import CalibrationConfig
from introroute.devices import check_device, check_dtype
from introroute.errors import ConfigError, PolicyError
from introroute.policies import TierInfo, build_policy

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9_.-]+$"

# Keys LiteLLM accepts in a call besides the per-request ones the router fills in itself.
_LITELLM_KEYS = (set(inspect.signature(litellm.completion).parameters) | set(all_litellm_params)) - {
    "messages",
    "stream",
    "kwargs",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatekeeperConfig(_Strict):
    """How to build the IntroLM gatekeeper (loaded lazily, on the first request that needs it)."""

    base: str = "smollm2-135m-instruct"
    adapter: str | None = None
    max_context: int | None = Field(default=None, gt=0)
    threads: int | None = Field(default=None, gt=0)
    device: Annotated[str, AfterValidator(check_device)] = "cpu"
    dtype: Annotated[str, AfterValidator(check_dtype)] = "float32"
    timeout_ms: float | None = Field(default=None, gt=0, description="scoring time budget")
    calibration: dict[str, CalibrationConfig] | None = Field(
        default=None, description="per-target map applied to the scores before the policy decides"
    )


class Price(_Strict):
    """USD per one million tokens."""

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)


class Latency(_Strict):
    """Linear latency model: time to first token plus time per output token."""

    ttft_ms: float = Field(ge=0)
    per_output_token_ms: float = Field(ge=0)


class LiteLLMParams(BaseModel):
    """Keyword arguments for ``litellm.completion`` that select and authenticate the tier's model.

    Any LiteLLM parameter is allowed (``api_version``, ``extra_headers``, ``mock_response``...);
    names LiteLLM does not know are errors.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    api_base: str | None = None
    api_key: SecretStr | None = None
    timeout: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _known_keys(self) -> LiteLLMParams:
        unknown = sorted(set(self.model_extra or {}) - _LITELLM_KEYS)
        if unknown:
            raise ValueError(f"unknown LiteLLM parameter(s) {unknown}")
        return self

    def call_kwargs(self) -> dict[str, Any]:
        """The arguments as ``litellm.completion`` takes them (the API key revealed, unset ones dropped)."""
        kwargs: dict[str, Any] = {"model": self.model, **(self.model_extra or {})}
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


class TierConfig(_Strict):
    """One model the router can send a request to."""

    name: str = Field(pattern=_NAME)
    target: str
    litellm_params: LiteLLMParams | None = None
    price: Price | None = None
    latency: Latency | None = None

    @property
    def local(self) -> bool:
        """A tier without ``litellm_params`` is answered in-process by the gatekeeper's base model."""
        return self.litellm_params is None

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
    """``type``: a registered policy name or ``module:Class``; ``params``: its constructor arguments."""

    type: str = "threshold"
    params: dict[str, Any] = Field(default_factory=dict)


class Backoff(_Strict):
    """Exponential backoff with jitter between retries (tenacity ``wait_exponential_jitter``)."""

    initial_s: float = Field(default=0.5, ge=0)
    max_s: float = Field(default=8.0, ge=0)
    exp_base: float = Field(default=2.0, ge=1)
    jitter_s: float = Field(default=0.5, ge=0)


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

    attempts: int = Field(default=2, ge=1)
    backoff: Backoff = Field(default_factory=Backoff)
    errors: list[Annotated[str, AfterValidator(_error_name)]] = Field(
        default_factory=lambda: [
            "Timeout",
            "APIConnectionError",
            "InternalServerError",
            "ServiceUnavailableError",
            "BadGatewayError",
            "RateLimitError",
        ]
    )

    def exceptions(self) -> tuple[type[BaseException], ...]:
        """The exception classes that trigger a retry."""
        return tuple(_litellm_error(name) for name in self.errors)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RouterConfig(_Strict):
    """A whole router: gatekeeper, tiers, policy, retries, fallbacks, fail-safe tier and log."""

    name: str = Field(default="default", pattern=_NAME)
    gatekeeper: GatekeeperConfig | None = None
    tiers: list[TierConfig] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    fallbacks: dict[str, Annotated[list[str], BeforeValidator(_as_list)]] = Field(default_factory=dict)
    fail_safe: str | None = None
    routing_log: str | None = None

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
        # An error, not a warning: a calibrated target no tier uses is almost always a misspelt
        # target name, and the target that was meant would silently stay uncalibrated.
        targets = sorted({t.target for t in self.tiers})
        calibrated = (self.gatekeeper.calibration if self.gatekeeper else None) or {}
        for target in calibrated:
            if target not in targets:
                raise ValueError(
                    f"gatekeeper.calibration.{target}: no tier uses this target; expected one of {targets}"
                )
        return self

    @property
    def fail_safe_tier(self) -> str:
        """The tier used when scoring fails: ``fail_safe``, or the last (most capable) tier."""
        return self.fail_safe or self.tiers[-1].name

    def tier(self, name: str) -> TierConfig:
        """The tier called ``name`` (names are validated unique)."""
        return next(t for t in self.tiers if t.name == name)

    def secrets(self) -> frozenset[str]:
        """Every value that must never be emitted: ``${ENV}`` substitutions and API keys."""
        keys = {
            t.litellm_params.api_key.get_secret_value()
            for t in self.tiers
            if t.litellm_params and t.litellm_params.api_key
        }
        return self._secrets | keys


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> RouterConfig:
    """Load and validate a router config from a YAML file or an already-parsed mapping.

    ``${VAR}`` in any string is replaced by the environment variable (an unset one is an error).
    The policy is instantiated once to validate its parameters. Raises :class:`ConfigError`.
    """
    if isinstance(source, Mapping):
        origin, data = "<config>", dict(source)
    else:
        origin, data = str(source), _read_yaml(Path(source))
    secrets: set[str] = set()
    data = _substitute(data, origin, "", secrets)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(origin, err) for err in exc.errors())) from None
    config._secrets = frozenset(secrets)
    try:
        build_policy(config.policy.type, dict(config.policy.params))
    except PolicyError as exc:
        raise ConfigError(f"{origin}: policy: {exc}") from None
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of router settings at the top level")
    return data


def _substitute(value: Any, origin: str, path: str, secrets: set[str]) -> Any:
    """Replace ``${VAR}`` everywhere, remembering each substituted value as a secret."""
    if isinstance(value, dict):
        return {k: _substitute(v, origin, _join(path, k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, origin, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def env(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise ConfigError(f"{origin}: {path}: environment variable {var} is not set")
        secrets.add(os.environ[var])
        return os.environ[var]

    return _ENV_REF.sub(env, value)


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _describe(origin: str, err: Mapping[str, Any]) -> str:
    """One line per pydantic error: file, key path, what was expected (never the offending value)."""
    loc = err["loc"]
    path = ""
    for part in loc:
        path = _join(path, part)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        expected = f"unknown key; expected one of {allowed}" if allowed else "unknown key"
        return f"{origin}: {path}: {expected}"
    if err["type"] == "value_error":
        message = str(err["ctx"]["error"])
        return f"{origin}: {path}: {message}" if path else f"{origin}: {message}"
    return f"{origin}: {path}: {err['msg']}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at ``loc`` in :class:`RouterConfig` (for 'expected one of')."""
    annotation: Any = RouterConfig
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, str) and model is not None and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        else:  # a list index or dict key: step into the element type
            args = get_args(_without_none(annotation))
            annotation = args[-1] if args else None
    model = _model_in(annotation)
    return sorted(model.model_fields) if model else []


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (so ``dict[str, M] | None`` steps into ``M``), else ``annotation``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for a in get_args(annotation) if (m := _model_in(a))), None)
    return None
