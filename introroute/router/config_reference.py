"""The router YAML reference, generated from the pydantic models' ``Field`` descriptions.

Why generated: the schema, its validation and its documentation used to be three texts that
drifted apart. Now each field's ``Field(description=...)`` in :mod:`introroute.router.config` is
the one source: ``python -m introroute.router.config_reference > docs/configuration.md`` writes
the reference, and ``tests/test_config_reference.py`` fails when a field has no description or
the committed file is stale. Built-in policies' parameters come from their constructors.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from introroute.policies import policy_class
from introroute.policies.registry import BUILTIN
from introroute.router.config import RouterConfig

COMMAND = "python -m introroute.router.config_reference > docs/configuration.md"


def models(root: type[BaseModel] = RouterConfig, path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(YAML path, model)`` of ``root`` and of every model nested in it, depth first, once each."""
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], where: str) -> Iterator[tuple[str, type[BaseModel]]]:
        if model in seen:
            return
        seen.add(model)
        yield where, model
        for name, field in model.model_fields.items():
            key = f"{where}.{name}" if where else name
            for nested, suffix in _nested_models(field.annotation):
                yield from walk(nested, key + suffix)

    yield from walk(root, path)


def _nested_models(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models inside a field's type, with how the YAML path reaches them (``[]``, ``.<key>``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        yield from _nested_models(args[0], suffix + "[]")
    elif origin is dict:
        yield from _nested_models(args[1], suffix + ".<key>")
    elif origin is Annotated:
        yield from _nested_models(args[0], suffix)
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _nested_models(arg, suffix)


def type_name(annotation: Any) -> str:
    """A YAML reader's name for a field type (``number``, ``list of string``, ``one of a, b``)."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        if issubclass(annotation, SecretStr):
            return "secret string"
        return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, "any")
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    return "any"


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if isinstance(value, BaseModel):
        return "see its section"
    return f"`{json.dumps(value)}`"


def _bounds(field: Any) -> str:
    """The numeric bounds pydantic enforces on a field (``>= 0``), as a suffix of its type."""
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >="}
    found = [
        f"{sign} {getattr(m, key)}" for m in field.metadata for key, sign in signs.items() if hasattr(m, key)
    ]
    return f", {', '.join(found)}" if found else ""


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: one line, ``|`` escaped, ``<name>`` not read as HTML."""
    return re.sub(r"<(?=[A-Za-z/])", "&lt;", " ".join(text.split()).replace("|", "\\|"))


def _first_paragraph(text: str | None) -> str:
    """A docstring's first paragraph on one line, its reStructuredText ``code`` as Markdown."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split()).replace("``", "`")


def missing_descriptions(root: type[BaseModel] = RouterConfig) -> list[str]:
    """YAML paths of the fields under ``root`` that have no description (the test requires none)."""
    return [
        f"{where + '.' if where else ''}{name}"
        for where, model in models(root)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]


def _policy_lines() -> list[str]:
    lines = [
        "## Built-in policies",
        "",
        "`policy.params` are the policy's constructor arguments (below with their defaults); a user",
        "policy is named `module:Class` or by its `introroute.policies` entry point. `knob` is the",
        "parameter `introroute calibrate` fits.",
        "",
        "| `policy.type` | what it does | `params` (defaults) | knob |",
        "|---|---|---|---|",
    ]
    for name in BUILTIN:
        cls = policy_class(name)
        params = [
            f"`{p.name}`" if p.default is p.empty else f"`{p.name}: {json.dumps(p.default, default=str)}`"
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self"
        ]
        knob = f"`{cls.knob}`" if cls.knob else "–"
        lines.append(f"| `{name}` | {_cell(_first_paragraph(cls.__doc__))} | {', '.join(params)} | {knob} |")
    return lines


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Router configuration reference",
        "",
        f"Generated from the `Field` descriptions in `introroute/router/config.py`: `{COMMAND}`.",
        "Unknown keys are errors; `${ENV_VAR}` is substituted in every string; secrets are masked in",
        "decisions, logs, reprs and errors. Ready configs: `policies/` and `examples/`.",
    ]
    for where, model in models():
        lines += ["", f"## {model.__name__}", ""]
        lines += [f"YAML: `{where or '(top level)'}`. {_first_paragraph(model.__doc__)}", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = _cell(field.description or "")
            kind = type_name(field.annotation) + _bounds(field)
            lines.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
    lines += ["", *_policy_lines()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
