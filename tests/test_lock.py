"""The venv is exactly requirements.lock, the lock satisfies pyproject.toml, and no module shadows a package.

A fresh clone installs the lock (`make setup`), so what CI tests is what a user gets. `make lock`
regenerates it; `make test-latest` runs the suite on the newest releases instead, where the first
two tests here are skipped (``LABELWATCH_TEST_LATEST=1``): their drift is what that run reports.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"
PROJECT = "labelwatch"
# Where Python puts a module's own folder first on sys.path: scripts (`python bench/x.py`, the
# compose producer) and pytest's rootdir-relative imports of tests/. The service's packages only
# count by their top-level names: their modules are imported as `consumer.x`, never as `x`.
SCRIPT_TREES = ("bench", "tests", "deploy")
PACKAGES = ("consumer", "detectors", "schemas")
latest_releases = pytest.mark.skipif(os.environ.get("LABELWATCH_TEST_LATEST") == "1",
                                     reason="make test-latest runs on the newest releases, not on the lock")


def locked() -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of the lock."""
    pins = (re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line) for line in LOCK.read_text().splitlines())
    return {canonicalize_name(m[1]): m[2] for m in pins if m}


def module_names(root: Path) -> dict[str, list[str]]:
    """``{importable name: [paths]}`` of the names the repository's code puts on sys.path."""
    names: dict[str, list[str]] = {}
    for tree in SCRIPT_TREES:
        for path in sorted((root / tree).rglob("*.py")):
            name = path.parent.name if path.name == "__init__.py" else path.stem
            names.setdefault(name, []).append(str(path.relative_to(root)))
    for package in PACKAGES:
        names.setdefault(package, []).append(package)
    return names


def shadowing(root: Path) -> dict[str, list[str]]:
    """``{path: [distributions]}`` for each module of ``root`` named after another distribution's import."""
    providers = packages_distributions()
    found = {}
    for name, paths in module_names(root).items():
        others = sorted({d for d in providers.get(name, []) if canonicalize_name(d) != PROJECT})
        for path in paths if others else ():
            found[path] = others
    return found


def test_no_module_of_the_repository_shadows_an_installed_distribution():
    # bench/kernels.py once shadowed the `kernels` package that transformers imports: every bench
    # script that loaded the embedding model failed on a fresh clone
    assert not shadowing(REPO), "rename these modules: they shadow installed packages"


def test_the_shadowing_check_finds_a_module_named_after_an_installed_package(tmp_path):
    for tree in SCRIPT_TREES:
        (tmp_path / tree).mkdir()
    (tmp_path / "bench" / "numpy.py").write_text("")
    (tmp_path / "deploy" / "producer").mkdir()
    (tmp_path / "deploy" / "producer" / "produce_samples.py").write_text("")
    (tmp_path / "tests" / "sklearn").mkdir()
    (tmp_path / "tests" / "sklearn" / "__init__.py").write_text("")
    assert shadowing(tmp_path) == {"bench/numpy.py": ["numpy"], "tests/sklearn/__init__.py": ["scikit-learn"]}


def drift() -> dict[str, tuple[str, str]]:
    """``{name: (locked, installed)}`` where this interpreter's distributions differ from the lock."""
    pins = locked()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop(PROJECT, None)
    names = set(pins) | set(installed)
    return {name: (pins.get(name, "(not locked)"), installed.get(name, "(not installed)")) for name in sorted(names)
            if pins.get(name) != installed.get(name)}


@latest_releases
def test_the_venv_holds_exactly_the_lock():
    assert not drift(), "the venv is not requirements.lock (locked, installed): `make setup` installs the lock"


def test_the_lock_satisfies_every_requirement_of_pyproject():
    # pyproject.toml keeps ranges for `pip install labelwatch`; the lock must lie inside them, or
    # it was not regenerated (`make lock`) after pyproject.toml changed
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    outside = [str(r) for r in requirements if canonicalize_name(r.name) != PROJECT
               and not r.specifier.contains(pins.get(canonicalize_name(r.name), "0.0.0a0"), prereleases=True)]
    assert not outside, f"not satisfied by requirements.lock (run `make lock`): {outside}"


def test_the_readme_names_the_versions_the_lock_holds():
    section = (REPO / "README.md").read_text().split("## Versions: the lock", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| ([^ |]+) \|", section, re.MULTILINE))
    assert len(rows) >= 9
    pins = locked()
    assert {name: pins.get(name) for name in rows} == rows


if __name__ == "__main__":  # `make test-latest`: what the newest releases change against the lock
    for name, (pin, version) in drift().items():
        print(f"  {name}: {pin} -> {version}")
