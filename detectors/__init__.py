"""Streaming label-error detectors over numpy vectors and labels: no Kafka, no I/O."""

from detectors.annotators import AnnotatorQuality, AnnotatorShift
from detectors.base import NEUTRAL, SCORE_TOLERANCE, Batch, Detector, LabelIndex, Signal
from detectors.cluster import ClusterDisagreement
from detectors.drift import ShareDrift, ShareShift
from detectors.combine import Combiner
from detectors.model import ModelDisagreement, RandomProjection, blend
from detectors.consensus import Consensus, ConsensusResult
from detectors.confident import ConfidentLearning
from detectors.noise import ClassThresholds, confident_disagreement
from detectors.lda import FoldLDA
from detectors.folds import fold_of
from detectors.config import MonitorConfig
from detectors.assessment import Assessment, LateVerdict
from detectors.monitor import LabelMonitor
from detectors.registry import REGISTRY, Params, parameters, register
from detectors.neighbors import NeighborAgreement, NeighborIndex, RunningStandardizer

__all__ = [
    "AnnotatorQuality",
    "SCORE_TOLERANCE",
    "AnnotatorShift",
    "REGISTRY",
    "Params",
    "parameters",
    "register",
    "Assessment",
    "ClassThresholds",
    "Consensus",
    "ConsensusResult",
    "ConfidentLearning",
    "FoldLDA",
    "LateVerdict",
    "NeighborAgreement",
    "NeighborIndex",
    "RunningStandardizer",
    "confident_disagreement",
    "fold_of",
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
    "ShareDrift",
    "ShareShift",
    "Signal",
    "blend",
]
