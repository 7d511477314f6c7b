"""The imports point one way (README, Architecture): benchmarks -> sr_export -> sr_runtime <- sr_train,
and inside sr_runtime the model core knows nothing above it, the backends open and run artifacts
(they import nothing that exports, converts or builds), and the fast path builds with the export
library and hands the backends what it built. No module outside sr_runtime/video/ imports a private
(underscore) name of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "sr_runtime": {"sr_export", "sr_train", "benchmarks"},
    "sr_train": {"sr_export", "benchmarks"},
    "sr_export": {"sr_train", "benchmarks"},
}
CORE = ("archs", "atomic", "checkpoint", "color", "community", "deploy", "errors", "machine", "metrics", "resize", "spec")
"""The model core: architectures, checkpoints (``community`` loads the community ones for
``checkpoint``), the RGB contract, the literature's protocol, typed errors, files, the CPU."""
FORBIDDEN_INSIDE = {
    "sr_runtime/backends": ("sr_runtime.fastpath", "sr_runtime.export", "sr_runtime.upscaler"),
    "sr_runtime/export": ("sr_runtime.fastpath", "sr_runtime.upscaler"),
    "sr_runtime/fastpath": ("sr_runtime.upscaler",),
}
"""Per folder of sr_runtime: modules its files may not import (the builders sit above the backends)."""
PRIVATE_TO = {"sr_runtime.video": ROOT / "sr_runtime" / "video"}
"""Packages whose underscore names only their own modules may import."""


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, dotted (``from a import b`` counts as ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert {f: v for f, v in bad.items() if v} == {}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_INSIDE))
def test_builders_sit_above_the_backends(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder} has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(n for n in imported_modules(f) if _within(n, FORBIDDEN_INSIDE[folder]))
        for f in files
    }
    assert {f: v for f, v in bad.items() if v} == {}


def test_the_model_core_imports_nothing_above_it():
    core = tuple(f"sr_runtime.{name}" for name in CORE)
    files = [f for name in CORE for f in sorted((ROOT / "sr_runtime").glob(f"{name}.py"))]
    files += sorted((ROOT / "sr_runtime" / "archs").rglob("*.py"))
    assert len(files) > len(CORE)
    bad = {
        str(f.relative_to(ROOT)): sorted(
            n for n in imported_modules(f) if n.startswith("sr_runtime") and n != "sr_runtime" and not _within(n, core)
        )
        for f in files
    }
    assert {f: v for f, v in bad.items() if v} == {}


def test_the_checker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sr_export.pipeline import run_export\n    import benchmarks.cli\n")
    assert imported_packages(module) == {"sr_export", "benchmarks"}
    module.write_text("def f():\n    from sr_runtime import fastpath\n    from sr_runtime.export.verify import compare\n")
    assert {"sr_runtime.fastpath", "sr_runtime.export.verify"} <= imported_modules(module)


def private_imports(path: Path, package: str) -> list[str]:
    """Every underscore name (or module) of ``package`` that ``path`` imports, as a dotted name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def private(dotted: str) -> bool:
        return any(part.startswith("_") for part in dotted[len(package) :].split("."))

    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package or node.module.startswith(package + "."):
                found += [f"{node.module}.{a.name}" for a in node.names if private(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(package + ".") and private(a.name)]
    return found


@pytest.mark.parametrize("package", sorted(PRIVATE_TO))
def test_no_module_outside_a_package_imports_its_private_names(package):
    inside = PRIVATE_TO[package]
    files = [f for top in ("sr_runtime", "sr_export", "sr_train", "benchmarks", "scripts", "tests")
             for f in sorted((ROOT / top).rglob("*.py")) if inside not in f.parents]
    bad = {str(f.relative_to(ROOT)): names for f in files if (names := private_imports(f, package))}
    assert bad == {}


def test_the_checker_sees_private_names(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from sr_runtime.video import is_video, _open_input\n"
        "def f():\n    from sr_runtime.video.probe import _HashingReader, probe_video\n"
        "    import sr_runtime.video._x\n    from sr_runtime.videos import _y\n"
    )
    assert private_imports(module, "sr_runtime.video") == [
        "sr_runtime.video._open_input", "sr_runtime.video.probe._HashingReader", "sr_runtime.video._x"]
