"""A new detector is one file plus one registry entry: settings, flags and the pipeline follow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from detectors import REGISTRY, MonitorConfig, Params, parameters, register
from detectors.cluster import ClusterDisagreement

REPO = Path(__file__).resolve().parent.parent

TOY = textwrap.dedent('''
    """A toy detector in a file of its own: it flags labels longer than a limit."""
    from pydantic import Field

    from detectors import Detector, Params, Signal, register


    @register
    class LongLabel(Detector):
        name = "long_label"

        class Params(Params):
            long_label_limit: int = Field(4, ge=1, description="Longest label the toy detector accepts.")

        @classmethod
        def from_params(cls, p, seed):
            return cls(p.long_label_limit)

        def __init__(self, limit):
            self.limit = limit

        def score_many(self, batch):
            return [Signal(1.0, True, None, {"length": len(label)}) if len(label) > self.limit else Signal(0.0, False)
                    for label in batch.labels]

        def learn_many(self, batch):
            pass
''')


def _labelwatch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process that imported the toy module first (as a plugin would be)."""
    (tmp_path / "toy_detector.py").write_text(TOY)
    launcher = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import toy_detector; "
                "from consumer.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", launcher, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_a_registered_toy_detector_gets_its_flag_and_votes_in_audit(tmp_path):
    labels = ["cat", "dog", "elephant", "cat", "giraffe", "dog"] * 20
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"sample_id": f"s{i}", "label": label,
                                              "embedding": [float(i % 7), float(len(label))]}) + b"\n"
                                for i, label in enumerate(labels)))
    events = tmp_path / "events.jsonl"

    assert "--long-label-limit" in _labelwatch(tmp_path, "audit", "--help").stdout
    done = _labelwatch(tmp_path, "audit", str(source), "--out", str(events), "--detectors", "cluster,long_label",
                       "--voters", "long_label", "--long-label-limit", "5")
    assert done.returncode == 0, done.stderr
    flagged = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    assert sorted({e["sample_id"] for e in flagged}) == sorted(f"s{i}" for i, label in enumerate(labels) if len(label) > 5)
    assert {r["detector"] for e in flagged for r in e["reasons"]} == {"long_label"}

    refused = _labelwatch(tmp_path, "audit", str(source), "--out", str(events), "--detectors", "long_label",
                          "--voters", "long_label", "--long-label-limit", "0")
    assert refused.returncode != 0 and "long_label_limit" in refused.stderr  # validated by its own Params


def test_every_parameter_is_declared_once_and_the_service_defaults_are_the_classes():
    # detectors that share a parameter inherit it from one mixin: one name, one default
    shared = REGISTRY["neighbors"].Params.model_fields["neighbors_k"]
    assert repr(REGISTRY["confident"].Params.model_fields["neighbors_k"]) == repr(shared) == repr(parameters()["neighbors_k"])
    # what the service builds by default is what each class builds with no arguments: the
    # doctests exercise the configuration production runs
    def knobs(detector) -> dict:
        return {k: v for k, v in vars(detector).items() if isinstance(v, (int, float, str, bool, type(None)))}

    for name, detector in REGISTRY.items():
        if name in ("cluster", "model", "neighbors", "confident"):
            assert knobs(MonitorConfig(detectors=(name,), voters=(name,)).build_detectors()[0]) == knobs(detector()), name


def test_a_second_declaration_of_a_parameter_under_the_same_name_is_refused():
    class Clash(ClusterDisagreement):
        name = "clash"

        class Params(Params):
            n_clusters: int = 7  # the cluster detector declares it with another default

    with pytest.raises(ValueError, match="n_clusters"):
        register(Clash)
    assert "clash" not in REGISTRY
