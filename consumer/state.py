"""Durable detector state: one checkpoint file per dataset, written atomically and verified on load.

A checkpoint is ``MAGIC | format version | blake2b digest | pickle`` of the dataset's
:class:`~consumer.pipeline.DatasetState`: its :class:`~detectors.LabelMonitor` and, per input
partition, the offset up to which it has judged, saved together so they can never disagree. It is written to a temporary file in the same directory,
fsynced, then renamed over the previous one, so a crash mid-write leaves the previous
checkpoint intact. Checkpoints are trusted local files (they are pickles): keep the state
directory private to the service.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import time
from pathlib import Path

MAGIC = b"LWCKPT"
FORMAT_VERSION = 3
_HEADER = len(MAGIC) + 2 + 32


class CorruptStateError(RuntimeError):
    """A checkpoint cannot be trusted. Nothing is dropped: start fresh explicitly, or restore it."""


def _file_stem(dataset: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[:40]
    return f"{slug}-{hashlib.blake2b(dataset.encode(), digest_size=8).hexdigest()}"


def encode_checkpoint(state: object) -> bytes:
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + FORMAT_VERSION.to_bytes(2, "big") + hashlib.blake2b(payload, digest_size=32).digest() + payload


def decode_checkpoint(blob: bytes, *, source: str = "checkpoint") -> object:
    """The state in ``blob``, or :class:`CorruptStateError` saying exactly what is wrong."""
    hint = "move it away to keep it, or start with --fresh-state (LABELWATCH_FRESH_STATE=true) to set it aside"
    if len(blob) < _HEADER or not blob.startswith(MAGIC):
        raise CorruptStateError(f"{source} is not a labelwatch checkpoint: {hint}")
    version = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 2], "big")
    if version != FORMAT_VERSION:
        raise CorruptStateError(f"{source} has format version {version}, this labelwatch reads {FORMAT_VERSION}: {hint}")
    digest, payload = blob[len(MAGIC) + 2:_HEADER], blob[_HEADER:]
    if hashlib.blake2b(payload, digest_size=32).digest() != digest:
        raise CorruptStateError(f"{source} is corrupt (checksum mismatch): {hint}")
    try:
        return pickle.loads(payload)
    except Exception as error:  # an incompatible library version, typically
        raise CorruptStateError(f"{source} cannot be restored ({type(error).__name__}: {error}): {hint}") from error


class StateStore:
    """Checkpoints of every dataset's detector state under ``directory``.

    >>> import tempfile
    >>> store = StateStore(tempfile.mkdtemp())
    >>> store.save("pets", {"learned": 3})
    >>> store.load("pets"), store.load("cars")
    ({'learned': 3}, None)
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, dataset: str) -> Path:
        return self.directory / f"{_file_stem(dataset)}.ckpt"

    def save(self, dataset: str, state: object) -> None:
        """Write ``state`` atomically: the previous checkpoint survives a crash at any point."""
        target = self.path(dataset)
        temporary = target.with_suffix(f".tmp-{os.getpid()}")
        with open(temporary, "wb") as handle:
            handle.write(encode_checkpoint(state))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load(self, dataset: str) -> object | None:
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
