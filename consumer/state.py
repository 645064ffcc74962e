"""Durable detector state, in one place: what a dataset's checkpoint holds, how it is encoded
and migrated, and the store that writes it atomically.

A checkpoint is ``MAGIC | format version | blake2b digest | payload``. The payload (format 4) is a
pickled plain dict of :class:`DatasetState`'s fields: detector objects (``detectors.*``), numpy
arrays and schema models, but no class path of this service shell, so the shell's modules can
move freely. Unpickling goes through :class:`_Unpickler`: it refuses modules outside
:data:`ALLOWED_MODULES` and maps classes that moved (:data:`MOVED`), so a class that moves
without an entry there fails ``tests/test_state.py``'s restore of a committed checkpoint of an
older release instead of failing users' restarts. Older formats are read through
:data:`MIGRATIONS`, one step per version.

Files are written to a temporary file in the same directory, fsynced, then renamed over the
previous one, so a crash mid-write leaves the previous checkpoint intact. Checkpoints are trusted
local files (pickles, even restricted): keep the state directory private to the service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pickle
import re
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

from consumer.previews import Previews
from detectors import AnnotatorQuality, Consensus, LabelMonitor, ShareDrift

MAGIC = b"LWCKPT"
FORMAT_VERSION = 4
_HEADER = len(MAGIC) + 2 + 32
ALLOWED_MODULES = ("detectors", "schemas", "numpy", "river", "sklearn", "scipy", "collections", "builtins",
                   "copyreg", "_codecs", "datetime", "pydantic", "pydantic_core", "consumer.state")
"""Top-level modules (or exact modules) whose classes a checkpoint may name."""
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("consumer.pipeline", "DatasetState"): ("consumer.state", "DatasetState"),  # format 3 pickled the class itself
    ("detectors.monitor", "Assessment"): ("detectors.assessment", "Assessment"),
    ("detectors.confident", "ClassThresholds"): ("detectors.noise", "ClassThresholds"),  # moved in the split of confident.py
    ("detectors.confident", "NoiseBudget"): ("detectors.noise", "NoiseBudget"),
    ("detectors.confident", "SourceMix"): ("detectors.noise", "SourceMix"),
    ("detectors.monitor", "_Pending"): ("detectors.schedule", "Judged"),  # moved with the re-audit schedule
}
"""Classes that moved since a checkpoint naming them was written: old (module, name) -> new."""


@dataclass
class DatasetState:
    """What a dataset's checkpoint holds: its detectors, and how far into each partition they judged.

    ``positions`` maps ``(topic, partition)`` to the offset after the last record of this dataset
    the monitor has judged. It is saved atomically with the monitor, so after a restart a replayed
    record below it is known to be inside the state already, with its outputs delivered.
    """

    monitor: LabelMonitor
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    annotators: AnnotatorQuality = field(default_factory=AnnotatorQuality)
    label_drift: ShareDrift = field(default_factory=ShareDrift)
    cluster_drift: ShareDrift = field(default_factory=ShareDrift)
    consensus: Consensus = field(default_factory=Consensus)
    previews: Previews = field(default_factory=Previews)  # what reviewers see of recent samples as neighbours
    reviewed: dict[str, int] = field(default_factory=dict)  # reviewers' answers by outcome
    topic_ids: dict[str, str] = field(default_factory=dict)  # the incarnation of each topic the positions refer to

    def __post_init__(self) -> None:
        if not isinstance(self.previews, Previews):  # (a checkpoint keeps them as a plain ordered dict)
            self.previews = Previews.restored(self.previews)

    def fields(self) -> dict:
        """What a checkpoint saves: the fields, in classes of no module of the service shell."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "previews": self.previews.saved()}


class StateUnwritable(RuntimeError):
    """A checkpoint could not be written (disk full, read-only, no permission). The previous one is
    intact, and no offset past it may be committed: the service stops, and replays from it once
    restarted with a writable state directory."""


class CorruptStateError(RuntimeError):
    """A checkpoint cannot be trusted. Nothing is dropped: start fresh explicitly, or restore it."""


def _file_stem(dataset: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[:40]
    return f"{slug}-{hashlib.blake2b(dataset.encode(), digest_size=8).hexdigest()}"


def _migrate_3(state: object) -> dict:
    """Format 3 pickled the DatasetState object itself (as ``consumer.pipeline.DatasetState``);
    those written before topic ids were kept have none."""
    return {"topic_ids": {}, **vars(state)}


MIGRATIONS = {3: _migrate_3}
"""Format N's unpickled payload -> format N + 1's (a dict of DatasetState fields from 4 on)."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module, name = MOVED.get((module, name), (module, name))
        if module not in ALLOWED_MODULES and module.split(".")[0] not in ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"a checkpoint may not name {module}.{name}")
        return super().find_class(module, name)


def encode_checkpoint(state: DatasetState) -> bytes:
    payload = pickle.dumps(state.fields(), protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + FORMAT_VERSION.to_bytes(2, "big") + hashlib.blake2b(payload, digest_size=32).digest() + payload


def decode_checkpoint(blob: bytes, *, source: str = "checkpoint") -> DatasetState:
    """The state in ``blob``, migrated from an older format if need be, or :class:`CorruptStateError`
    saying exactly what is wrong."""
    hint = "move it away to keep it, or start with --fresh-state (LABELWATCH_FRESH_STATE=true) to set it aside"
    if len(blob) < _HEADER or not blob.startswith(MAGIC):
        raise CorruptStateError(f"{source} is not a labelwatch checkpoint: {hint}")
    version = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 2], "big")
    if version != FORMAT_VERSION and version not in MIGRATIONS:
        raise CorruptStateError(f"{source} has format version {version}, this labelwatch reads "
                                f"{min(MIGRATIONS, default=FORMAT_VERSION)} to {FORMAT_VERSION}: {hint}")
    digest, payload = blob[len(MAGIC) + 2:_HEADER], blob[_HEADER:]
    if hashlib.blake2b(payload, digest_size=32).digest() != digest:
        raise CorruptStateError(f"{source} is corrupt (checksum mismatch): {hint}")
    try:
        state = _Unpickler(io.BytesIO(payload)).load()
        while version < FORMAT_VERSION:
            state, version = MIGRATIONS[version](state), version + 1
        if not isinstance(state, dict):
            raise TypeError(f"the payload is a {type(state).__name__}, not a dict of DatasetState fields")
        return DatasetState(**state)
    except Exception as error:  # an incompatible library version, a class that moved, a foreign payload
        raise CorruptStateError(f"{source} cannot be restored ({type(error).__name__}: {error}): {hint}") from error


class StateStore:
    """Checkpoints of every dataset's detector state under ``directory``.

    >>> import tempfile
    >>> from detectors import MonitorConfig
    >>> store = StateStore(tempfile.mkdtemp())
    >>> store.save("pets", DatasetState(LabelMonitor.from_config(MonitorConfig()), positions={("in", 0): 3}))
    >>> store.load("pets").positions, store.load("cars")
    ({('in', 0): 3}, None)
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, dataset: str) -> Path:
        return self.directory / f"{_file_stem(dataset)}.ckpt"

    def save(self, dataset: str, state: DatasetState) -> None:
        """Write ``state`` atomically: the previous checkpoint survives a crash at any point, and a
        failed write (:class:`StateUnwritable`) leaves it in place, with no partial file beside it."""
        target = self.path(dataset)
        temporary = target.with_suffix(f".tmp-{os.getpid()}")
        with self._unwritable(temporary, f"cannot write the checkpoint of dataset {dataset!r} to {self.directory}"):
            with open(temporary, "wb") as handle:
                handle.write(encode_checkpoint(state))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            self._sync_directory()

    def check_writable(self) -> None:
        """Write, sync and remove a probe file: :class:`StateUnwritable` if the directory cannot take a checkpoint."""
        probe = self.directory / f".write-probe-{os.getpid()}"
        with self._unwritable(probe, f"the state directory {self.directory} is not writable"):
            with open(probe, "wb") as handle:
                handle.write(b"labelwatch")
                os.fsync(handle.fileno())
            probe.unlink()

    @staticmethod
    @contextlib.contextmanager
    def _unwritable(partial: Path, what: str):
        """An OSError in the block becomes :class:`StateUnwritable` saying ``what`` and why, and
        ``partial`` (the file the block was writing) is removed."""
        try:
            yield
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise StateUnwritable(f"{what}: {error.strerror or error} (errno {error.errno})") from error

    def _sync_directory(self) -> None:
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load(self, dataset: str) -> DatasetState | None:
        """The dataset's last checkpoint; ``None`` if it has none; :class:`CorruptStateError` if unusable."""
        target = self.path(dataset)
        if not target.exists():
            return None
        return decode_checkpoint(target.read_bytes(), source=f"checkpoint {target}")

    def verify(self) -> int:
        """Check that every checkpoint can be restored; returns how many there are."""
        checkpoints = sorted(self.directory.glob("*.ckpt"))
        for checkpoint in checkpoints:
            decode_checkpoint(checkpoint.read_bytes(), source=f"checkpoint {checkpoint}")
        return len(checkpoints)

    def set_aside(self) -> Path | None:
        """Move every checkpoint into a timestamped sub-folder (never deletes); returns it, if any moved."""
        checkpoints = sorted(self.directory.glob("*.ckpt"))
        if not checkpoints:
            return None
        aside = self.directory / f"set-aside-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for checkpoint in checkpoints:
            checkpoint.rename(aside / checkpoint.name)
        return aside


class DatasetStates:
    """Every dataset's state in memory: restored from its checkpoint on first use, else fresh, and
    saved again when it changed.

    Datasets never share state: each has its own :class:`~detectors.LabelMonitor`, made by
    ``new_monitor`` the first time the dataset appears.
    """

    def __init__(self, new_monitor: Callable[[], LabelMonitor], store: StateStore | None = None):
        self.new_monitor = new_monitor
        self.store = store
        self.in_memory: dict[str, DatasetState] = {}
        self._changed: set[str] = set()

    def get(self, dataset: str) -> DatasetState:
        """The dataset's state: from memory, else from its checkpoint, else fresh."""
        if dataset not in self.in_memory:
            restored = self.store.load(dataset) if self.store is not None else None
            self.in_memory[dataset] = restored or DatasetState(self.new_monitor())
        return self.in_memory[dataset]

    def touch(self, dataset: str) -> None:
        """Mark the dataset's state as changed: the next :meth:`checkpoint` saves it."""
        self._changed.add(dataset)

    @property
    def changed(self) -> bool:
        return bool(self._changed)

    def checkpoint(self) -> int:
        """Save every dataset that changed since the last checkpoint; returns how many."""
        if self.store is None:  # memory is the only copy
            self._changed.clear()
            return 0
        for dataset in sorted(self._changed):
            self.store.save(dataset, self.in_memory[dataset])
        saved, self._changed = len(self._changed), set()
        return saved

    def release(self) -> None:
        """Forget every dataset's state, after a checkpoint, when partitions move away.

        The next record of a dataset restores it from its checkpoint, which may meanwhile have been
        advanced by another instance that owned the partition. Without a store nothing is
        released: memory is then the only copy.
        """
        if self.store is not None:
            if self._changed:
                raise RuntimeError("release() before checkpoint() would drop what was judged since")
            self.in_memory.clear()
