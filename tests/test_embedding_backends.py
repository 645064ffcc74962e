"""The embedding backends: onnx matches torch, int8 stays close, and neither ever downloads.

Real model, real review texts: the ONNX export is made once per session into a temporary cache,
by the same child process the service would start, with the Hugging Face hub unreachable.
"""

from __future__ import annotations

import os
import random
import stat
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from pydantic import ValidationError

from consumer.app import build_pipeline
from consumer.cli import build_parser, _settings
from consumer.embedding import SentenceEmbedder, embedder_for, make_embedder
from consumer.onnx_encoder import OnnxEmbedder
from consumer.settings import Settings

N_TEXTS = 120


pytestmark = pytest.mark.usefixtures("clean_env")  # conftest: no LABELWATCH_* variable leaks in


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A fresh export cache, filled by one export made with the hub unreachable and an empty HF cache."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home"))}
    with mock.patch.dict(os.environ, offline):
        OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=cache).export()
    return cache


@pytest.fixture(scope="session")
def texts():
    from consumer.demo.datasets import load

    data = load("reviews")
    return [data.texts[i] for i in random.Random(1).sample(range(len(data)), N_TEXTS)]


@pytest.fixture(scope="session")
def torch_vectors(texts):
    return SentenceEmbedder().encode(texts)


def test_onnx_embeddings_equal_torch_ones(cache_dir, texts, torch_vectors):
    vectors = make_embedder(backend="onnx", cache_dir=str(cache_dir)).encode(texts)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-5)


def test_int8_embeddings_stay_close_to_torch_ones(cache_dir, texts, torch_vectors):
    vectors = make_embedder(backend="onnx-int8", cache_dir=str(cache_dir)).encode(texts)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    # measured on 500 reviews: mean 0.992, min 0.976
    assert cosine.mean() > 0.985 and cosine.min() > 0.95, (cosine.mean(), cosine.min())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_outputs_follow_input_order_and_never_depend_on_the_other_texts(cache_dir, texts, backend):
    embedder = make_embedder(backend=backend, cache_dir=str(cache_dir))
    vectors = embedder.encode(texts[:40])
    np.testing.assert_array_equal(embedder.encode(texts[:40][::-1]), vectors[::-1])
    alone = np.vstack([embedder.encode([text]) for text in texts[:40:7]])
    np.testing.assert_array_equal(alone, vectors[::7])
    one_thread = make_embedder(backend=backend, cache_dir=str(cache_dir), threads=1)
    np.testing.assert_array_equal(one_thread.encode(texts[:40]), vectors)


def test_batched_runs_keep_the_input_order(cache_dir, texts, torch_vectors):
    embedder = OnnxEmbedder("all-MiniLM-L6-v2", batch_size=16, cache_dir=cache_dir)
    np.testing.assert_allclose(embedder.encode(texts), torch_vectors, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_empty_input_loads_nothing(tmp_path, backend):
    embedder = make_embedder(backend=backend, cache_dir=str(tmp_path))
    assert embedder.encode([]).shape == (0, 0)
    assert not embedder.loaded and not any(tmp_path.iterdir())


def test_the_export_is_made_once_and_readable_by_every_user(cache_dir):
    (export,) = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    assert {p.name for p in export.iterdir()} == {"model.onnx", "model-int8.onnx", "tokenizer.json", "encoder.json"}
    assert stat.S_IMODE(export.stat().st_mode) & 0o055 == 0o055
    stamp = (export / "model.onnx").stat().st_mtime_ns
    embedder = make_embedder(backend="onnx", cache_dir=str(cache_dir))
    assert embedder.export() == export and embedder.dimension == 384
    assert (export / "model.onnx").stat().st_mtime_ns == stamp


def test_loading_is_offline_and_a_missing_model_fails_clearly(cache_dir, clean_env):
    clean_env.delenv("HF_HUB_OFFLINE", raising=False)
    make_embedder(backend="onnx-int8", cache_dir=str(cache_dir)).load()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(RuntimeError, match="offline"):
        make_embedder("no-such-org/no-such-model", backend="onnx", cache_dir=str(cache_dir)).load()


# ------------------------------------------------------------------------ settings, flags, factory


def test_backend_from_environment_flag_and_default(clean_env):
    assert Settings().embedding_backend == "onnx"
    clean_env.setenv("LABELWATCH_EMBEDDING_BACKEND", "onnx-int8")
    assert Settings().embedding_backend == "onnx-int8"
    for command in (["run"], ["audit", "in.jsonl", "--out", "o.jsonl"], ["evaluate", "in.jsonl"], ["demo"]):
        args = build_parser().parse_args([*command, "--embedding-backend", "torch"])
        assert _settings(args, ("embedding_backend",)).embedding_backend == "torch"


def test_an_unknown_backend_is_rejected_clearly(clean_env):
    with pytest.raises(ValidationError, match="(?s)embedding_backend.*'torch', 'onnx' or 'onnx-int8'"):
        Settings(embedding_backend="tensorflow")
    clean_env.setenv("LABELWATCH_EMBEDDING_BACKEND", "int8")
    with pytest.raises(ValidationError, match="embedding_backend"):
        Settings()
    args = build_parser().parse_args(["run", "--embedding-backend", "openvino"])
    with pytest.raises(SystemExit, match="embedding_backend"):
        _settings(args, ("embedding_backend",))


def test_a_gpu_needs_the_torch_backend():
    with pytest.raises(ValidationError, match="needs embedding_backend torch"):
        Settings(embedding_device="cuda")
    assert Settings(embedding_device="cuda", embedding_backend="torch").embedding_device == "cuda"


def test_the_pipeline_gets_the_backend_that_the_settings_name(tmp_path):
    for backend, kind, int8 in (("torch", SentenceEmbedder, None), ("onnx", OnnxEmbedder, False),
                                ("onnx-int8", OnnxEmbedder, True)):
        settings = Settings(embedding_backend=backend, embedding_cache_dir=str(tmp_path), embedding_batch_size=8)
        embedder = build_pipeline(settings).embedder
        assert type(embedder) is kind and type(embedder_for(settings)) is kind
        assert getattr(embedder, "int8", None) is int8 and not embedder.loaded
        assert embedder.batch_size == (8 if backend == "torch" else 1)


def test_the_factory_takes_any_object_with_the_embedding_fields():
    fields = SimpleNamespace(embedding_model="all-MiniLM-L6-v2", embedding_backend="onnx-int8", embedding_batch_size=4,
                             embedding_device="cpu", embedding_cache_dir=None, embedding_threads=1)
    assert embedder_for(fields).threads == 1
    fields.embedding_threads = 0  # every core
    assert embedder_for(fields).threads == len(os.sched_getaffinity(0))
