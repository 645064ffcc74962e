"""Streaming label-error detectors over numpy vectors and labels: no Kafka, no I/O."""

from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.cluster import ClusterDisagreement
from detectors.combine import Combiner
from detectors.model import ModelDisagreement, RandomProjection, blend
from detectors.monitor import Assessment, LabelMonitor, MonitorConfig

__all__ = [
    "Assessment",
    "Batch",
    "ClusterDisagreement",
    "Combiner",
    "Detector",
    "LabelIndex",
    "LabelMonitor",
    "ModelDisagreement",
    "MonitorConfig",
    "NEUTRAL",
    "RandomProjection",
    "Signal",
    "blend",
]
