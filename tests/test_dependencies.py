"""The service's imports are covered by its core dependencies, and Kafka checksums run natively."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = ("consumer", "detectors", "schemas")


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_level_modules() -> set[str]:
    modules = set()
    for package in SERVICE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - set(SERVICE_PACKAGES)


def test_every_third_party_import_of_the_service_is_a_core_dependency():
    # a module only a dev extra installs would crash the Docker image (`pip install .`) at import
    core = {_requirement_name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not distributions & core:
            missing[module] = sorted(distributions) or ["(not installed)"]
    assert not missing, f"imported by the service but not core dependencies: {missing}"


def test_kafka_python_verifies_record_checksums_natively():
    # kafka-python falls back to a pure-Python CRC-32C without the `crc32c` extra, which made a bare
    # consume of 384-d vectors ten times slower (1,212 vs 12,559 records/s, docs/benchmarks.md)
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
