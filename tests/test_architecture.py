"""The house's rules, checked on the source: strata, private names, cycles, adapters.

Imports are read with ``ast`` from every module of ``ppl_dgp`` and ``models`` (installed as
``ppl_dgp.models``), at any depth (a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The math stratum: arrays in, arrays out, no NumPyro.
MATH = {
    "ppl_dgp.linalg",
    "ppl_dgp.kernels",
    "ppl_dgp.mean_functions",
    "ppl_dgp.conditionals",
    "ppl_dgp.kl",
    "ppl_dgp.likelihoods",
    "ppl_dgp.curvature",
    "ppl_dgp.inducing",
    "ppl_dgp.calibration",
    "ppl_dgp.sampling",
    "ppl_dgp.stacking",
}


def _modules() -> dict[str, Path]:
    out = {}
    for base, package in ((ROOT / "ppl_dgp", "ppl_dgp"), (ROOT / "models", "ppl_dgp.models")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str], bool]]:
    """``(module, imported names, at module level)`` of every import in module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative import
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, mod] if mod else base)
            out.append((mod, [a.name for a in node.names], id(node) in top))
    return out


def test_every_math_module_exists_and_imports_no_numpyro():
    assert MATH <= set(MODULES)
    for name in sorted(MATH):
        bad = [m for m, _, _ in _imports(name) if m.split(".")[0] in ("numpyro", "blackjax")]
        assert not bad, f"{name} (math stratum) imports {bad}"
        inner = [m for m, _, _ in _imports(name) if m.startswith("ppl_dgp")]
        assert set(inner) <= MATH | {"ppl_dgp"}, f"{name} imports above the math: {inner}"


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def test_no_module_imports_a_private_name_of_another_package():
    offenders = []
    for name in MODULES:
        for mod, names, _ in _imports(name):
            if not mod.startswith("ppl_dgp") or mod not in MODULES:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and _package(mod) != _package(name):
                offenders.append(f"{name} imports {private} from {mod}")
    assert not offenders, offenders


def test_no_import_cycle_at_module_level():
    def targets(mod: str, names: list[str]) -> set[str]:
        subs = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES}  # from pkg import sub
        return subs or ({mod} if mod in MODULES else set())

    graph = {
        name: {t for m, ns, top in _imports(name) if top for t in targets(m, ns)} - {name}
        for name in MODULES
    }
    # a package's __init__ importing its submodules is the re-export, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


@pytest.mark.parametrize(("library", "adapter"), [("arviz", "ppl_dgp.diagnostics"),
                                                  ("blackjax", "ppl_dgp.infer.sghmc")])  # fmt: skip
def test_third_party_churn_stays_behind_one_adapter(library, adapter):
    users = sorted(
        name
        for name in MODULES
        if any(
            m.split(".")[0] in (library, f"{library}_base", f"{library}_stats", f"{library}_plots")
            for m, _, _ in _imports(name)
        )  # fmt: skip
    )
    assert users == [adapter]


def test_methods_do_not_import_each_other_privately_and_register_once():
    from ppl_dgp.infer import METHODS

    methods = [n for n in MODULES if n.startswith("ppl_dgp.infer.") and n.rsplit(".", 1)[1]
               not in ("core", "loop", "minibatch")]  # fmt: skip
    for name in methods:
        for mod, names, _ in _imports(name):
            if mod in methods and mod != name:
                assert not [n for n in names if n.startswith("_")], f"{name} -> {mod}"
    assert set(METHODS) == {"svi", "nuts", "hmc", "sghmc", "laplace", "map", "ensemble"}
