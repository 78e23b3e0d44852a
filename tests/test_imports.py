"""Every public module imports on its own in a fresh interpreter, and the package's imports have no
cycle (module-level imports only: a function-level import runs after both modules are loaded)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import vae_pyro

PACKAGE = Path(vae_pyro.__file__).parent


def public_modules() -> list[str]:
    out = ["vae_pyro"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="vae_pyro."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            out.append(info.name)
    return out


@pytest.mark.slow  # ~30 fresh interpreters, each importing torch and pyro: ~1 min on a busy 2-core machine
def test_every_public_module_imports_in_a_fresh_interpreter():
    """One interpreter per module (each starts empty), run by one small driver so the test stays fast."""
    driver = ("import subprocess, sys\n"
              "bad = [m for m in sys.argv[1:] if subprocess.run([sys.executable, '-c', 'import ' + m],"
              " capture_output=True).returncode]\n"
              "print(','.join(bad))")
    modules = public_modules()
    assert "vae_pyro.estimators.iwae" in modules and "vae_pyro.checks.agreement" in modules
    out = subprocess.run([sys.executable, "-c", driver, *modules], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"modules that fail to import on their own: {out.stdout.strip()}"


def _module_imports(name: str) -> set[str]:
    """The vae_pyro modules ``name`` imports at module level (relative imports resolved)."""
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:  # top level only
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("vae_pyro"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if _exists(full) else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vae_pyro")}
    return out - {name}


def _exists(name: str) -> bool:
    rel = name.replace(".", "/")
    return (PACKAGE.parent / f"{rel}.py").exists() or (PACKAGE.parent / rel / "__init__.py").exists()


def test_no_import_cycle_between_the_package_modules():
    """Depth-first search over the module-level import graph; a back edge is a cycle. A package's
    ``__init__`` importing its own submodules is how registration happens (as in pyro.infer), so edges
    from a submodule to its parent package's names are taken to the module that defines them."""
    graph = {m: _module_imports(m) for m in public_modules()}
    for m, deps in graph.items():  # a submodule importing its own package means the package's modules
        graph[m] = {d for d in deps if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"
