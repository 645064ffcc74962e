"""Every detector labelwatch can run, by name, and its parameters, each declared once.

A detector declares its ``name``, a frozen parameter model ``Params`` (a :class:`Params`
subclass whose defaults are the service's defaults), and ``from_params(params, seed)``.
Registering it (:func:`register`) is all it takes: the service's settings, the command-line
flags (``--<name>`` and ``LABELWATCH_<NAME>``, one per parameter) and :class:`MonitorConfig` are
derived from the registry. Two detectors that share a parameter (the neighbour search of
``neighbors`` and ``confident``, say) inherit it from one mixin, so it has one name and one
default.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from detectors.base import Detector


class Params(BaseModel):
    """A detector's parameters: frozen, validated, every field with a description and a default."""

    model_config = ConfigDict(frozen=True, extra="ignore")


REGISTRY: dict[str, type[Detector]] = {}
"""Every detector labelwatch can run, by the name that appears in events and metrics."""


def register(detector: type[Detector]) -> type[Detector]:
    """Add ``detector`` to the registry (usable as a class decorator); its parameters must not
    clash with another detector's parameter of the same name.

    >>> from detectors import Detector
    >>> class Shy(Detector):
    ...     name = "shy"
    ...     class Params(Params):
    ...         user_weight: float = 0.9
    >>> register(Shy)
    Traceback (most recent call last):
    ValueError: parameter 'user_weight' of detector 'shy' differs from the one detector 'model' declares ...
    """
    for name, field in detector.Params.model_fields.items():
        for other in REGISTRY.values():
            theirs = other.Params.model_fields.get(name)
            if other is not detector and theirs is not None and repr(theirs) != repr(field):
                raise ValueError(f"parameter {name!r} of detector {detector.name!r} differs from the one detector "
                                 f"{other.name!r} declares ({theirs!r}): share it through one Params mixin")
    REGISTRY[detector.name] = detector
    return detector


def parameters() -> dict[str, FieldInfo]:
    """Every registered detector's parameters, by their one name, in registration order."""
    fields: dict[str, FieldInfo] = {}
    for detector in REGISTRY.values():
        for name, field in detector.Params.model_fields.items():
            fields.setdefault(name, field)
    return fields


def build(name: str, values: dict[str, Any], seed: int) -> Detector:
    """The detector ``name``, made from those of ``values`` its parameters name (validated)."""
    detector = REGISTRY[name]
    return detector.from_params(detector.Params(**values), seed)

