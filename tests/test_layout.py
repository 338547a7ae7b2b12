"""The package layout is the architecture: the request path never imports the offline tools.

Online (runs on every routed request): ``router`` -> ``gatekeeper`` -> ``policies``, over the shared
contracts at the package root. Offline (builds and measures what the router uses): ``data``,
``training``, ``evaluation``, ``routing_eval``, ``fitting``. Each package's docstring says what it
may import; :data:`MAY_IMPORT` is that rule, checked on every import statement, lazy ones included.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import introroute

PACKAGE = Path(introroute.__file__).parent
ROOT_INIT = "introroute.__init__"  # the public API: re-exports of the online path only
CONTRACTS = {
    "introroute.errors",
    "introroute.messages",
    "introroute.scoring",
    "introroute.devices",
    "introroute.decision_log",
    "introroute.imports",
}
ONLINE = {
    ROOT_INIT,
    *CONTRACTS,
    "introroute.router",
    "introroute.gatekeeper",
    "introroute.policies",
    "introroute.server",
    "introroute.integrations",
}
OFFLINE = [
    "introroute.data",
    "introroute.training",
    "introroute.evaluation",
    "introroute.routing_eval",
    "introroute.fitting",
]

# package -> what its modules may import of introroute besides themselves (a module or package
# allows everything below it). ``introroute.cli`` is the entry point to both paths: unrestricted.
MAY_IMPORT: dict[str, set[str]] = {
    ROOT_INIT: ONLINE,
    "introroute.errors": set(),
    "introroute.messages": {"introroute.errors"},
    "introroute.scoring": set(),
    "introroute.devices": set(),  # device and dtype names, without torch (config validation, CLI)
    # the routing log's record: written by the router, read by the offline commands
    "introroute.decision_log": {"introroute.errors", "introroute.messages"},
    "introroute.imports": set(),  # module:attribute paths, the one reader of the user's code
    "introroute.policies": {"introroute.errors", "introroute.imports"},
    "introroute.gatekeeper": CONTRACTS,
    "introroute.router": CONTRACTS | {"introroute.policies", "introroute.gatekeeper"},
    # the gatekeeper as its own service (``introroute serve``) and LiteLLM's classifier plugin
    "introroute.server": CONTRACTS | {"introroute.router", "introroute.gatekeeper"},
    "introroute.integrations": CONTRACTS | {"introroute.router"},
    "introroute.data": ONLINE | {"introroute.evaluation.metrics"},
    "introroute.training": ONLINE | {"introroute.data", "introroute.evaluation.metrics"},
    "introroute.evaluation": ONLINE | {"introroute.data"},
    "introroute.routing_eval": ONLINE | {"introroute.data", "introroute.evaluation"},
    "introroute.fitting": ONLINE | {"introroute.data", "introroute.evaluation", "introroute.routing_eval"},
}


# The one exception to the rule, and why: methods that moved offline keep a deprecated shim in
# place (deprecate, don't break), which imports the new home inside the method, never at module
# level. A routed request calls none of them (test_request_path_loads_no_offline_code).
DEPRECATED_SHIMS: dict[str, set[str]] = {
    "introroute.gatekeeper.model": {"introroute.training.forward"},  # IntroLM.prompt_cache & co.
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return ROOT_INIT if name == "introroute" else name


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _imports(path: Path) -> set[str]:
    """Every introroute module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:  # the package has no relative imports
            found.add(ROOT_INIT if node.module == "introroute" else node.module)
    return {m for m in found if _within(m, "introroute")}


def _package(module: str) -> str | None:
    owners = [p for p in MAY_IMPORT if _within(module, p)]
    return max(owners, key=len) if owners else None


def test_every_package_imports_only_what_its_docstring_allows():
    violations, unplaced = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _within(module, "introroute.cli"):
            continue
        package = _package(module)
        if package is None:
            unplaced.append(module)
            continue
        allowed = {package, *MAY_IMPORT[package], *DEPRECATED_SHIMS.get(module, ())}
        violations += [
            f"{module} imports {m}" for m in sorted(_imports(path)) if not any(_within(m, a) for a in allowed)
        ]
    assert not unplaced, f"modules outside the layout (add their package to MAY_IMPORT): {unplaced}"
    assert not violations, "\n".join(violations)


def test_deprecated_shims_import_offline_code_only_when_called():
    """The exceptions in :data:`DEPRECATED_SHIMS` import offline code inside a function that
    warns (never at module level), and the import is still there (or the exception goes)."""
    for module, targets in DEPRECATED_SHIMS.items():
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        assert targets <= _imports(path), f"{module} no longer imports {targets}: drop the exception"
        assert not targets & _module_level_imports(path), f"{module} imports {targets} at module level"
        assert "DeprecationWarning" in path.read_text()


# A routed request end to end (scores -> calibration -> policy -> LiteLLM), in a fresh process.
PROBE = textwrap.dedent(
    """
    import json, sys
    import introroute, introroute.gatekeeper
    from introroute.router import Router

    class Scores:
        targets = ["small", "large"]
        def scores(self, messages):
            return {"small": 0.4, "large": 0.9}

    tiers = [
        {"name": n, "target": n, "litellm_params": {"model": "openai/gpt-4o", "mock_response": n}}
        for n in ("small", "large")
    ]
    config = {
        "name": "probe",
        "gatekeeper": {"calibration": {"small": {"method": "platt", "a": 1.0, "b": 1.0}}},
        "tiers": tiers,
        "policy": {"type": "threshold", "params": {"tau": 0.5}},
    }
    router = Router.from_dict(config, gatekeeper=Scores())
    decision = introroute.decision(router.completion(messages=[{"role": "user", "content": "hi"}]))
    calibrated = decision.raw_scores is not None
    print(json.dumps({"tier": decision.tier, "calibrated": calibrated, "modules": sorted(sys.modules)}))
    """
)


def test_request_path_loads_no_offline_code():
    """Importing the router and the gatekeeper and routing a request loads no offline module,
    no scikit-learn and no matplotlib: a routing process pays for none of them."""
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["tier"] == "small" and probe["calibrated"]  # sigmoid(logit(0.4) + 1) = 0.64 >= tau
    loaded = [
        m
        for m in probe["modules"]
        if any(_within(m, p) for p in [*OFFLINE, "introroute.cli", "sklearn", "matplotlib"])
    ]
    assert not loaded


def _module_level_imports(path: Path) -> set[str]:
    """The introroute modules ``path`` imports outside functions (``if TYPE_CHECKING:`` included)."""
    found = set()
    pending = list(ast.parse(path.read_text(), str(path)).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from pkg import module
        elif isinstance(node, ast.If | ast.Try):
            pending += (
                node.body + node.orelse + getattr(node, "handlers", []) + getattr(node, "finalbody", [])
            )
        elif isinstance(node, ast.ExceptHandler):
            pending += node.body
    return {m for m in found if _within(m, "introroute")}


def test_no_two_modules_import_each_other():
    """Two modules that import each other at module level are one idea split in two files (and an
    import-order trap); a package's ``__init__`` re-exporting its own modules is not a cycle."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    imports = {name: _module_level_imports(path) & set(modules) for name, path in modules.items()}

    def is_package_of(package: str, module: str) -> bool:
        return modules[package].name == "__init__.py" and module.startswith(package + ".")

    cycles = sorted(
        f"{a} <-> {b}"
        for a, found in imports.items()
        for b in found
        if a < b and a in imports[b] and not is_package_of(a, b) and not is_package_of(b, a)
    )
    assert not cycles, "two-file import cycles:\n" + "\n".join(cycles)
