"""Router YAML files for offline tools: load them without API keys, and change a few values while
keeping the rest of the file, comments included.

Why load without keys: replaying and fitting a router (``introroute eval --routing``,
``introroute calibrate``) sends no request, so an unset ``${OPENAI_API_KEY}`` must not stop them;
:func:`load_offline` puts a placeholder where an unset variable is referenced (the file is not
changed, and set variables are substituted as usual).

Why not load-and-dump: a router YAML is documentation too (why tau is 0.5, which key needs which
environment variable), and ``yaml.safe_dump`` drops every comment; ruamel.yaml, which keeps them,
is not a dependency. So the edits here are targeted line edits of the block-style YAML that the
shipped configs use: a policy parameter's value (or a new line for it) and a
``gatekeeper.calibration`` block. Every edit is verified by parsing the result and comparing it
with the intended data; when a file's layout defeats the line edits (flow-style sections,
multi-line values), the whole file is re-dumped with ``yaml.safe_dump`` instead and the returned
note says that the comments were lost. ``${ENV}`` references are never substituted: the text is
edited, not the loaded config.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

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
        return load_config(data)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("<config>", origin)) from None


def load_offline(path: str | os.PathLike[str]) -> RouterConfig:
    """:func:`introroute.router.config.load_config` for tools that call no model (see the module doc)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    return load_text(text, str(path))


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(.*)$")


def _scalar(value: Any) -> str:
    """One YAML scalar as ``safe_dump`` writes it (``1.0e-05``, not ``1e-05``, which YAML 1.1 reads
    as a string)."""
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def _key(name: str) -> str:
    """A mapping key: plain when YAML reads it back as the same string, else double-quoted."""
    plain = re.fullmatch(r"[A-Za-z0-9_][\w./-]*", name) is not None
    return name if plain and yaml.safe_load(name) == name else '"' + name.replace('"', '\\"') + '"'


def _flow(mapping: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(mapping), default_flow_style=True, sort_keys=False, width=1 << 30).strip()


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _section(lines: list[str], key: str) -> tuple[int, int] | None:
    """``(start, end)`` of top-level ``key:`` and its indented block (end: the next top-level key)."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"^{re.escape(key)}\s*:", line)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not _content(lines[end]) or _indent(lines[end]) > 0):
        end += 1
    while end > start + 1 and not _content(lines[end - 1]):
        end -= 1  # trailing blank or comment lines belong to what follows
    return start, end


def _child(lines: list[str], start: int, end: int, key: str) -> tuple[int, int, int] | None:
    """``(line, end, indent)`` of ``key:`` among the direct children of the block ``lines[start:end]``."""
    children = [i for i in range(start + 1, end) if _content(lines[i])]
    if not children:
        return None
    indent = min(_indent(lines[i]) for i in children)
    for i in children:
        if _indent(lines[i]) == indent and re.match(rf"^\s*{re.escape(key)}\s*:", lines[i]):
            stop = i + 1
            while stop < end and (not _content(lines[stop]) or _indent(lines[stop]) > indent):
                stop += 1
            while stop > i + 1 and not _content(lines[stop - 1]):
                stop -= 1
            return i, stop, indent
    return None


def _child_indent(lines: list[str], start: int, end: int, parent_indent: int) -> int:
    children = [_indent(lines[i]) for i in range(start + 1, end) if _content(lines[i])]
    return min(children) if children else parent_indent + 2


def _set_param(lines: list[str], name: str, value: Any) -> list[str]:
    """``policy.params.<name>: value``, replacing the old value (its comment kept) or adding it."""
    lines = list(lines)
    policy = _section(lines, "policy")
    if policy is None:
        return [*lines, "policy:", "  type: threshold", "  params:", f"    {name}: {_scalar(value)}"]
    start, end = policy
    if lines[start].split(":", 1)[1].split("#")[0].strip():
        raise ValueError("policy is not a block mapping")
    params = _child(lines, start, end, "params")
    if params is None:
        indent = _child_indent(lines, start, end, 0)
        lines.insert(start + 1, " " * indent + f"params: {{{name}: {_scalar(value)}}}")
        return lines
    line, stop, indent = params
    rest = lines[line].split(":", 1)[1]
    inline = rest.split("#")[0].strip()
    if inline.startswith("{") and inline.endswith("}"):
        body = inline[1:-1].strip()
        pattern = re.compile(rf"(^|,)\s*{re.escape(name)}\s*:\s*[^,]*")
        if pattern.search(body):
            body = pattern.sub(lambda m: f"{m.group(1)} {name}: {_scalar(value)}", body, count=1).strip()
        else:
            body = f"{name}: {_scalar(value)}" + (f", {body}" if body else "")
        lines[line] = lines[line].replace(inline, "{" + body + "}", 1)
        return lines
    if inline:
        raise ValueError("policy.params is neither a block nor a one-line flow mapping")
    found = _child(lines, line, stop, name)
    if found is None:
        child = _child_indent(lines, line, stop, indent)
        lines.insert(line + 1, " " * child + f"{name}: {_scalar(value)}")
        return lines
    target = lines[found[0]]
    match = re.match(rf"^(\s*{re.escape(name)}\s*:\s*)([^#]*?)(\s*#.*)?$", target)
    if match is None or found[1] != found[0] + 1:
        raise ValueError(f"policy.params.{name} spans several lines")
    head, comment = match.group(1) + _scalar(value), match.group(3)
    if comment:  # keep the comment in its column when the new value leaves room
        column = len(match.group(1)) + len(match.group(2)) + len(comment) - len(comment.lstrip())
        comment = " " * max(1, column - len(head)) + comment.lstrip()
    lines[found[0]] = head + (comment or "")
    return lines


def _set_calibration(lines: list[str], calibration: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``gatekeeper.calibration`` replaced by ``calibration`` (one flow mapping per target)."""
    lines = list(lines)
    section = _section(lines, "gatekeeper")
    if section is None:
        block = ["gatekeeper:", "  calibration:"]
        block += [f"    {_key(t)}: {_flow(c)}" for t, c in calibration.items()]
        return [*lines, *block]
    start, end = section
    if lines[start].split(":", 1)[1].split("#")[0].strip():
        raise ValueError("gatekeeper is not a block mapping")
    indent = _child_indent(lines, start, end, 0)
    block = [" " * indent + "calibration:"]
    block += [" " * (indent + 2) + f"{_key(t)}: {_flow(c)}" for t, c in calibration.items()]
    old = _child(lines, start, end, "calibration")
    if old is None:
        return lines[:end] + block + lines[end:]
    return lines[: old[0]] + block + lines[old[1] :]


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


def edit_router_yaml(
    text: str, params: Mapping[str, Any], calibration: Mapping[str, Any] | None = None
) -> tuple[str, str | None]:
    """``(new_text, note)``: ``text`` with ``policy.params`` updated and, when given,
    ``gatekeeper.calibration`` replaced; ``note`` is None when every comment was kept."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the router YAML does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("the router YAML must be a mapping at the top level")
    expected = updated_data(data, params, calibration)
    lines = text.splitlines()
    try:
        for name, value in params.items():
            lines = _set_param(lines, name, value)
        if calibration is not None:
            lines = _set_calibration(lines, calibration)
        edited = "\n".join(lines) + "\n"
        if yaml.safe_load(edited) == expected:
            return edited, None
    except (ValueError, yaml.YAMLError):
        pass
    dumped = yaml.safe_dump(expected, sort_keys=False, width=1 << 30)
    note = "the YAML's layout defeated the line edits: it was re-written by yaml.safe_dump, comments lost"
    return "# Written by introroute calibrate; the original's comments were not kept.\n" + dumped, note
