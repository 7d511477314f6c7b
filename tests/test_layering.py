"""The imports point one way: benchmarks -> sr_export -> sr_runtime <- sr_train (README, Architecture), and
no module outside sr_runtime/video/ imports a private (underscore) name of it."""

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
PRIVATE_TO = {"sr_runtime.video": ROOT / "sr_runtime" / "video"}
"""Packages whose underscore names only their own modules may import."""


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert {f: v for f, v in bad.items() if v} == {}


def test_the_checker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sr_export.pipeline import run_export\n    import benchmarks.cli\n")
    assert imported_packages(module) == {"sr_export", "benchmarks"}


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
