"""Router YAML files for offline tools: load them without API keys, and change a few values while
keeping the rest of the file, comments included.

Why load without keys: replaying and fitting a router (``introroute eval --routing``,
``introroute calibrate``) sends no request, so an unset ``${OPENAI_API_KEY}`` must not stop them;
:func:`load_offline` puts a placeholder where an unset variable is referenced (the file is not
changed, and set variables are substituted as usual).

Why round-trip editing: a router YAML is documentation too (why tau is 0.5, which key needs which
environment variable), and ``yaml.safe_dump`` drops every comment. :func:`edit_router_yaml` edits
with ruamel.yaml in round-trip mode instead, which keeps comments, key order, quoting and flow or
block style, so only the edited values change: a policy parameter and, when given,
``gatekeeper.calibration``. The result is verified by parsing it with PyYAML (what
:func:`load_text` uses) and comparing it with the intended data. ``${ENV}`` references are never
substituted: the text is edited, not the loaded config.
"""

from __future__ import annotations

import copy
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap

from introroute.errors import ConfigError

if TYPE_CHECKING:
    from introroute.router.config import RouterConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDER = "unset-in-offline-use"


def load_text(text: str, origin: str) -> RouterConfig:
    """Validate YAML text as a router config, unset ``${VAR}`` references replaced by a placeholder;
    errors name ``origin``."""
    from introroute.router.config import load_config

    offline = _ENV_REF.sub(lambda m: m.group(0) if m.group(1) in os.environ else PLACEHOLDER, text)
    try:
        data = yaml.safe_load(offline)
    except yaml.YAMLError:
        raise ConfigError(f"{origin}: invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of router settings at the top level")
    try:
        return load_config(data, check_heads=False)  # offline: targets are the predictions'
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("<config>", origin)) from None


def load_offline(path: str | os.PathLike[str]) -> RouterConfig:
    """:func:`introroute.router.config.load_config` for tools that call no model (see the module doc)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    return load_text(text, str(path))


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made Python numbers and lists, which ruamel.yaml
    writes as plain YAML numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flow(mapping: Mapping[str, Any]) -> CommentedMap:
    """One calibration map, written on one line (``{method: platt, a: 0.0, b: -1.3}``)."""
    flow = CommentedMap(_plain(dict(mapping)))
    flow.fa.set_flow_style()
    return flow


def _block(doc: CommentedMap, key: str) -> CommentedMap:
    """``doc[key]``, a mapping, added at the end when missing or empty."""
    if doc.get(key) is None:
        doc[key] = CommentedMap()
    if not isinstance(doc[key], Mapping):
        raise ConfigError(f"the router YAML's {key!r} is not a mapping")
    return doc[key]


def updated_data(
    data: Mapping[str, Any], params: Mapping[str, Any], calibration: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The parsed YAML with the new policy parameters and calibration (what the text must load as)."""
    new = copy.deepcopy(dict(data))
    policy = new.setdefault("policy", {"type": "threshold"})
    policy.setdefault("params", {})
    policy["params"] = {**(policy["params"] or {}), **params}
    if calibration is not None:
        gatekeeper = new.get("gatekeeper") or {}
        new["gatekeeper"] = {**gatekeeper, "calibration": dict(calibration)}
    return new


def _float(representer: Any, value: float) -> Any:
    """A float as PyYAML writes it (``1.0e-05``; ruamel.yaml's ``1e-05`` is a string to PyYAML,
    which :func:`load_text` uses)."""
    return representer.represent_scalar("tag:yaml.org,2002:float", yaml.safe_dump(value).split("\n")[0])


def _null(representer: Any, _: None) -> Any:
    """``null`` spelled out, as the shipped configs write it (ruamel.yaml leaves the value empty)."""
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _round_trip(text: str) -> tuple[YAML, Any]:
    """A round-trip YAML in the shipped configs' layout (mappings indented by 2, ``  - `` list
    items), keeping quotes, and the loaded document."""
    rt = YAML()  # 'rt': keeps comments, key order, flow/block style
    rt.preserve_quotes = True
    rt.width = 1 << 30  # never fold a long line
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(float, _float)
    rt.representer.add_representer(type(None), _null)
    try:
        return rt, rt.load(text)
    except YAMLError as exc:
        raise ConfigError(f"the router YAML does not parse: {exc}") from None


def _dump(rt: YAML, doc: Any) -> str:
    stream = io.StringIO()
    rt.dump(doc, stream)
    return stream.getvalue()


def edit_router_yaml(
    text: str, params: Mapping[str, Any], calibration: Mapping[str, Any] | None = None
) -> tuple[str, str | None]:
    """``(new_text, note)``: ``text`` with ``policy.params`` updated and, when given,
    ``gatekeeper.calibration`` replaced (one flow mapping per target); ``note`` is None when the
    rest of the file is byte-for-byte the same, else says that ruamel.yaml re-formatted it."""
    rt, doc = _round_trip(text)
    if not isinstance(doc, CommentedMap):
        raise ConfigError("the router YAML must be a mapping at the top level")
    unchanged = _dump(rt, doc) == text
    new_calibration = None if calibration is None else _plain(dict(calibration))
    expected = updated_data(yaml.safe_load(text), _plain(dict(params)), new_calibration)
    policy = _block(doc, "policy")
    policy.setdefault("type", "threshold")
    new_params = _block(policy, "params")
    for name, value in params.items():
        new_params[name] = _plain(value)
    if calibration is not None:
        _block(doc, "gatekeeper")["calibration"] = CommentedMap(
            (target, _flow(c)) for target, c in calibration.items()
        )
    edited = _dump(rt, doc)
    if yaml.safe_load(edited) != expected:  # e.g. a YAML 1.1/1.2 difference between the two parsers
        raise ConfigError("the edited router YAML does not read back as the intended settings")
    note = None if unchanged else "ruamel.yaml re-formatted parts of the YAML (comments kept)"
    return edited, note
