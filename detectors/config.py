"""How a dataset's detectors are built: which run, which vote, how, and every registered parameter."""

from __future__ import annotations

from typing import Any

from detectors.base import Detector
from detectors.combine import Combiner
from detectors.registry import REGISTRY, build, parameters

EVIDENCE: tuple[str, ...] = ("consensus",)
"""Signals the service computes outside the detectors and hands to the monitor with each batch
(``consensus``: the label most of a sample's annotators gave, against the sample's own); they vote
like detectors when named among the voters."""

MONITOR_DEFAULTS: dict[str, Any] = {
    "detectors": ("cluster", "confident"), "voters": ("confident", "consensus"), "policy": "union",
    "reaudit_window": 10_000, "reaudit_delay": 250, "learning_step": 500, "seed": 0,
}
"""The monitor's own settings (the detectors' come from the registry). Chosen with ``bench/quality.py``."""


class MonitorConfig:
    """How a dataset's detectors are built. Every dataset gets its own, fresh, from this.

    ``detectors`` all run and all appear as evidence; only the ``voters`` decide the verdict,
    combined by ``policy``. Every registered detector parameter (:func:`~detectors.registry.parameters`)
    is a keyword too, read as an attribute, defaulting to its declaration.

    >>> config = MonitorConfig(n_clusters=8)
    >>> config.n_clusters, config.neighbors_k, config.detectors
    (8, 10, ('cluster', 'confident'))
    >>> config.replace(policy="vote:2").policy
    'vote:2'
    >>> MonitorConfig(n_cluster=8)
    Traceback (most recent call last):
    TypeError: unknown detector parameter 'n_cluster'
    """

    __slots__ = ("detectors", "voters", "policy", "reaudit_window", "reaudit_delay", "learning_step", "seed", "params")

    def __init__(self, **values: Any):
        declared = parameters()
        for name in values:
            if name not in MONITOR_DEFAULTS and name not in declared:
                raise TypeError(f"unknown detector parameter {name!r}")
        for name, default in MONITOR_DEFAULTS.items():
            object.__setattr__(self, name, tuple(values[name]) if name in ("detectors", "voters") and name in values
                               else values.get(name, default))
        object.__setattr__(self, "params", {name: values.get(name, field.default) for name, field in declared.items()})
        unknown = set(self.detectors) - set(REGISTRY)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; choose from {sorted(REGISTRY)}")
        if not self.voters or not set(self.voters) <= set(self.detectors) | set(EVIDENCE):
            raise ValueError(f"voters {list(self.voters)} must be a non-empty subset of detectors {list(self.detectors)} "
                             f"and evidence {list(EVIDENCE)}")
        if self.learning_step < 1:
            raise ValueError("learning_step must be at least 1")
        if self.reaudit_delay > self.reaudit_window:
            raise ValueError("reaudit_delay must not exceed reaudit_window")
        Combiner.parse(self.policy)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "params")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("MonitorConfig is frozen: use replace()")

    def values(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in MONITOR_DEFAULTS}, **self.params}

    def replace(self, **changes: Any) -> MonitorConfig:
        return MonitorConfig(**{**self.values(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MonitorConfig) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.values().items())))

    def __repr__(self) -> str:
        return "MonitorConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.values().items()) + ")"

    def build_detectors(self) -> list[Detector]:
        return [build(name, self.params, self.seed) for name in self.detectors]
