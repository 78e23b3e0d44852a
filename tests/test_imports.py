"""Every public module imports on its own in a fresh interpreter; the package's imports have no cycle at
any scope (a function-level import counts: one that dodges a cycle is still a cycle), there is no
function-level import of a project module at all, and the estimators compute without progress bars,
process groups, checks or reports (layers import downward only)."""

from __future__ import annotations

import ast
import pkgutil
import os
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


#: the driver: the third-party stack imported once (none of vae_pyro), then one forked child per module,
#: each starting with no vae_pyro module loaded, importing just that one. Equivalent, for our modules,
#: to a fresh interpreter each (what the property is about: no module relies on another having been
#: imported first), without paying torch's import ~60 times (~3 min on 2 cores; ~15 s this way).
FORK_DRIVER = """
import os, sys
import numpy, torch, pyro, pyro.distributions, tqdm, scipy.stats, torch._inductor  # noqa: F401
assert not any(m == "vae_pyro" or m.startswith("vae_pyro.") for m in sys.modules)
bad = []
for m in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(m)
        except BaseException:
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        bad.append(m)
print(",".join(bad))
"""


@pytest.mark.slow
def test_every_public_module_imports_in_a_fresh_interpreter():
    """Each module imports on its own, in a process where no vae_pyro module was imported before it."""
    modules = public_modules()
    assert "vae_pyro.estimators.iwae" in modules and "vae_pyro.checks.agreement" in modules
    out = subprocess.run([sys.executable, "-c", FORK_DRIVER, *modules], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"modules that fail to import on their own: {out.stdout.strip()}"


def test_the_import_driver_finds_a_module_that_fails_on_its_own(tmp_path):
    """The driver reports a module whose import fails (here one that exists only to fail)."""
    (tmp_path / "fails_alone.py").write_text("raise ImportError('needs another module first')\n")
    out = subprocess.run(
        [sys.executable, "-c", FORK_DRIVER, "fails_alone", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.stdout.strip() == "fails_alone"


def _path(name: str) -> Path:
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    return path if path.exists() else PACKAGE.parent / name.replace(".", "/") / "__init__.py"


def _imports(name: str, nodes) -> set[str]:
    """The vae_pyro modules the import statements among ``nodes`` of module ``name`` name (relative
    imports resolved; ``from . import x`` is module ``x`` when it is one)."""
    path = _path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in nodes:
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


def _module_imports(name: str) -> set[str]:
    """The vae_pyro modules ``name`` imports at any scope (module level, functions, classes)."""
    return _imports(name, ast.walk(ast.parse(_path(name).read_text())))


def _function_level_imports(name: str) -> set[str]:
    """The vae_pyro modules ``name`` imports inside a function or method body."""
    tree = ast.parse(_path(name).read_text())
    bodies = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return _imports(name, [n for body in bodies for n in ast.walk(body)])


def _third_party_imports(name: str) -> set[str]:
    """The top-level package of every absolute import in ``name`` (``tqdm.auto`` -> ``tqdm``)."""
    out = set()
    for node in ast.walk(ast.parse(_path(name).read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
    return out


def _exists(name: str) -> bool:
    rel = name.replace(".", "/")
    return (PACKAGE.parent / f"{rel}.py").exists() or (PACKAGE.parent / rel / "__init__.py").exists()


def test_no_import_cycle_between_the_package_modules():
    """Depth-first search over the import graph of every scope; a back edge is a cycle. A package's
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
                cycles.append(path[path.index(d) :] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_no_function_level_import_of_a_project_module():
    """Layers import downward at module level; an import inside a function hides an upward edge."""
    found = {m: sorted(deps) for m in public_modules() if (deps := _function_level_imports(m))}
    assert not found, f"function-level imports of project modules: {found}"


#: what the estimators may not import: they compute; bars, process groups, checks and reports are above
ABOVE_ESTIMATORS = (
    "vae_pyro.distributed",
    "vae_pyro.checks",
    "vae_pyro.report",
    "vae_pyro.train",
    "vae_pyro.runs",
    "vae_pyro.evaluation",
    "vae_pyro.api",
    "vae_pyro.cli",
)


def test_estimators_import_no_loop_machinery():
    estimators = [m for m in public_modules() if m.startswith("vae_pyro.estimators")]
    assert "vae_pyro.estimators.iwae" in estimators
    for m in estimators:
        assert "tqdm" not in _third_party_imports(m), f"{m} imports tqdm: progress bars belong to the loops"
        upward = sorted(d for d in _module_imports(m) if d.startswith(ABOVE_ESTIMATORS))
        assert not upward, f"{m} imports {upward} (estimators compute; the loops above them shard and report)"


def test_the_import_walk_sees_function_level_imports():
    """The walk itself can fail: an import inside a function body of a module's source is found."""
    code = "import torch\n\ndef f():\n    from .report import table\n    return table\n"
    bodies = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef)]
    assert _imports("vae_pyro.runs", [n for b in bodies for n in ast.walk(b)]) == {"vae_pyro.report"}
