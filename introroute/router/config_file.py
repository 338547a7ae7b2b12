"""Reading a router config file safely, and saying what is wrong with it.

Why apart from the schema (:mod:`introroute.router.config`): none of this knows what a router
is. A config is read from a file anyone may have edited, so the reading is hardened on its own:
UTF-8 text only, YAML nested at most :data:`MAX_YAML_DEPTH` levels (checked on the event stream
before PyYAML builds anything), aliases expanding to at most :data:`MAX_YAML_NODES` values,
``${ENV_VAR}`` substituted with every substituted value remembered as a secret, and pydantic's
errors rewritten as one line each naming the file and key path, never the offending value.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from introroute.errors import ConfigError

#: A router config has tens of values; YAML aliases expanding past this are an attack (or a bug).
MAX_YAML_NODES = 100_000
#: Deeper nesting than this is not a router config (and would exhaust Python's recursion limit).
MAX_YAML_DEPTH = 64
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path``; :class:`ConfigError` naming what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        _check_depth(text, path)
        # Aliases are kept as shared references while parsing (cheap); check_size then bounds
        # what they would expand to before anything walks the tree.
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of router settings at the top level")
    return data


def _check_depth(text: str, path: Path) -> None:
    """Stop at the first collection nested deeper than :data:`MAX_YAML_DEPTH`, from the event
    stream, before PyYAML builds anything: its scanner is quadratic in the nesting depth
    (10 KB of ``[`` took ~30 s) and its composer recursive."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{path}: the config is nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def check_size(data: Any, origin: str) -> None:
    """Reject configs that expand past :data:`MAX_YAML_NODES` values, nest too deeply, or contain
    themselves, in time linear in the distinct values (each shared one is sized once).

    Why: YAML aliases make a tiny file stand for an exponentially large tree (an "alias bomb":
    645 bytes stalled loading for minutes), and a self-referencing alias never ends; both used to
    reach the recursive steps below and hang or raise a raw ``RecursionError``.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: (value, depth, children sized yet?)
    stack: list[tuple[Any, int, bool]] = [(data, 1, False)]
    while stack:
        value, depth, expanded = stack.pop()
        if not isinstance(value, dict | list | tuple | set):
            continue
        key = id(value)
        if expanded:
            on_path.discard(key)
            children = _children(value)
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{origin}: the config expands to more than {MAX_YAML_NODES} values "
                    "(YAML aliases repeating aliases?); write it out plainly"
                )
            sizes[key] = total
            continue
        if key in on_path:
            raise ConfigError(f"{origin}: the config contains itself (a YAML alias inside its own anchor)")
        if key in sizes:
            continue
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{origin}: the config is nested more than {MAX_YAML_DEPTH} levels deep")
        on_path.add(key)
        stack.append((value, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(value))


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return list(value)


def substitute(value: Any, origin: str, path: str, secrets: set[str]) -> Any:
    """Replace ``${VAR}`` everywhere, remembering each substituted value as a secret."""
    if isinstance(value, dict):
        return {k: substitute(v, origin, _join(path, k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, origin, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
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


def describe(origin: str, err: Mapping[str, Any], root: type[BaseModel]) -> str:
    """One line per pydantic error: file, key path, what was expected (never the offending value).

    ``root`` is the model validated (its field names at the error's path are the expected keys).
    """
    loc = err["loc"]
    path = ""
    for part in loc:
        path = _join(path, part)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        expected = f"unknown key; expected one of {allowed}" if allowed else "unknown key"
        return f"{origin}: {path}: {expected}"
    if err["type"] == "value_error":
        message = str(err["ctx"]["error"])
        return f"{origin}: {path}: {message}" if path else f"{origin}: {message}"
    return f"{origin}: {path}: {err['msg']}"


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at ``loc`` in ``root`` (for 'expected one of')."""
    annotation: Any = root
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
