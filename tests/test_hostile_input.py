"""Fuzz tests of the input path: hostile, malformed or odd records fed to :class:`Pipeline`.

The contract checked on every micro-batch, whatever it holds:

* ``Pipeline.process`` never raises, and the pipeline keeps working afterwards;
* every input record ends as exactly one of: processed (one non-late verdict, carrying the record's
  source) or a dead letter (carrying the record itself, its source and its exact original bytes);
* every dead letter has a non-empty reason and an ``error_type`` from :data:`ERROR_TYPES`;
* ``labelwatch_samples_invalid_total{reason=...}`` counts each rejection by its ``error_type``;
* every verdict and review-event score is finite and in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.pipeline import BatchResult, InputRecord, Pipeline
from consumer.records import DEAD_LETTER_KEEP_BYTES
from detectors import MonitorConfig
from schemas import DeadLetter, SourcePosition

CONFIG = MonitorConfig(n_clusters=2, cluster_window=64, neighbors_per_class=20, reaudit_window=200, reaudit_delay=50)
ERROR_TYPES = frozenset({"not_json", "schema", "too_large", "empty", "dimension_mismatch"})
DIM = 4
LABELS = ("cat", "dog")
WARMUP = 60  # more than the confident detector's warm-up (50), so its trained path runs too


def fuzz_settings(max_examples: int):
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class FakeEmbedder:
    """A deterministic stand-in for the text model: a fixed-width vector per text, and a log of calls."""

    def __init__(self, width: int = DIM):
        self.width = width
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest())
            rows.append(np.random.default_rng(seed).normal(size=self.width))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.width)


class Harness:
    """One pipeline under test; feeds batches and checks the contract on each result."""

    def __init__(self, *, embedder: FakeEmbedder | None = None, max_message_bytes: int = 1_048_576):
        self.embedder = embedder
        self.pipeline = Pipeline(CONFIG, embedder, max_message_bytes=max_message_bytes)
        self.offset = 0

    def invalid_count(self, reason: str) -> float:
        value = self.pipeline.metrics.registry.get_sample_value(
            "labelwatch_samples_invalid_total", {"reason": reason})
        return value or 0.0

    def feed(self, values: list[bytes | None]) -> BatchResult:
        records = []
        for value in values:
            records.append(InputRecord(value, SourcePosition(topic="fuzz", partition=0, offset=self.offset)))
            self.offset += 1
        before = {reason: self.invalid_count(reason) for reason in ERROR_TYPES}

        result = self.pipeline.process(records)  # must never raise

        first = [v for v in result.verdicts if not v.late]
        assert len(first) + len(result.dead_letters) == len(records)
        assert result.n_processed == len(first)
        # Exactly one outcome per record, matched by the record's own source position.
        outcomes = sorted([v.source.offset for v in first] + [r.source.offset for r, _ in result.dead_letters])
        assert outcomes == [r.source.offset for r in records]
        by_offset = {r.source.offset: r for r in records}
        for record, letter in result.dead_letters:
            assert record is by_offset[record.source.offset]
            check_dead_letter(letter, record)
        for verdict in first:
            assert verdict.event_id and verdict.sample_id and verdict.label
        for verdict in result.verdicts:
            assert math.isfinite(verdict.score) and 0.0 <= verdict.score <= 1.0
        for event in result.events:
            assert math.isfinite(event.score) and 0.0 <= event.score <= 1.0
            assert all(math.isfinite(r.score) and 0.0 <= r.score <= 1.0 for r in event.reasons)

        rejected = Counter(letter.error_type for _, letter in result.dead_letters)
        for reason in ERROR_TYPES:
            assert self.invalid_count(reason) - before[reason] == rejected[reason], reason
        if self.embedder is not None:
            assert all(text.strip() for text in self.embedder.seen), "a blank text reached the embedder"
        return result

    def feed_clean(self, n: int = 6, *, dataset: str | None = None) -> BatchResult:
        """A batch of ordinary samples: the pipeline must still judge every one of them."""
        result = self.feed([encode(m) for m in clean_messages(n, start=self.offset, dataset=dataset)])
        assert not result.dead_letters
        return result

    def warm_up(self, n: int = WARMUP) -> None:
        self.feed_clean(n)


def check_dead_letter(letter: DeadLetter, record: InputRecord) -> None:
    assert letter.error_type in ERROR_TYPES
    assert letter.reason and letter.reason.strip()
    assert letter.source == record.source
    kept = record.value if record.value is None else record.value[:DEAD_LETTER_KEEP_BYTES]
    assert letter.original_bytes() == kept
    assert letter.original_truncated == (record.value is not None and len(record.value) > DEAD_LETTER_KEEP_BYTES)
    # ... and still exactly after a trip through the dead-letter topic's JSON, which stays deliverable
    wire = letter.model_dump_json()
    assert DeadLetter.model_validate_json(wire).original_bytes() == kept
    assert len(wire.encode()) < 1_000_000, "a dead letter must fit the broker's default message size"


def clean_messages(n: int, *, start: int = 0, dataset: str | None = None) -> list[dict]:
    rng = np.random.default_rng(start)
    messages = []
    for i in range(start, start + n):
        label = LABELS[i % 2]
        center = np.zeros(DIM)
        center[i % 2] = 5.0
        message = {"sample_id": f"clean-{i}", "label": label,
                   "embedding": [round(float(x), 4) for x in center + rng.normal(size=DIM)]}
        if dataset is not None:
            message["dataset"] = dataset
        messages.append(message)
    return messages


def encode(message, *, ensure_ascii: bool = True) -> bytes:
    return json.dumps(message, ensure_ascii=ensure_ascii).encode("utf-8")


# --- strategies ---------------------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=20)
labels = st.one_of(st.sampled_from(LABELS), st.text(min_size=1, max_size=12))
moderate = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


def vectors(dim: int = DIM):
    return st.lists(moderate, min_size=dim, max_size=dim)


# Floats of float32 width (NaN and infinities included): finite values beyond the float32 range are
# the subject of test_extreme_finite_embedding_values alone.
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(width=32) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (``json.dumps`` writes NaN and Infinity as the bare tokens ``NaN``/``Infinity``)."""

predictions = st.fixed_dictionaries(
    {"label": labels},
    optional={"probabilities": st.dictionaries(labels, st.floats(min_value=0.0, max_value=1.0), max_size=4)},
)


@st.composite
def valid_messages(draw, dim: int = DIM, text_allowed: bool = True) -> dict:
    message = {"sample_id": draw(ids), "label": draw(labels)}
    has_text = text_allowed and draw(st.booleans())
    if has_text:
        message["text"] = draw(st.text(min_size=1, max_size=30).filter(str.strip))
    if not has_text or draw(st.booleans()):
        message["embedding"] = draw(vectors(dim))
    optional = {
        "annotator_id": st.text(max_size=10),
        "prediction": predictions,
        "metadata": st.dictionaries(st.text(max_size=6), json_junk, max_size=3),
        "annotated_at": st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123+02:00"]),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            message[name] = draw(strategy)
    return message


FIELDS = ("sample_id", "label", "text", "embedding", "dataset", "annotator_id", "prediction", "metadata",
          "annotated_at")


@st.composite
def mutated_messages(draw) -> dict:
    """A valid message with some fields deleted, some replaced by junk of any type, maybe an unknown one."""
    message = draw(valid_messages())
    for name in FIELDS:
        action = draw(st.sampled_from(["keep", "keep", "delete", "junk"]))
        if action == "delete":
            message.pop(name, None)
        elif action == "junk":
            message[name] = draw(json_junk)
    if draw(st.booleans()):
        message[draw(st.text(min_size=1, max_size=8))] = draw(json_junk)
    return message


@st.composite
def json_bytes(draw, messages) -> bytes:
    return encode(draw(messages), ensure_ascii=draw(st.booleans()))


INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82",
                b"\xf4\x90\x80\x80"]


@st.composite
def non_utf8(draw) -> bytes:
    """A JSON sample with an invalid UTF-8 sequence spliced in anywhere (inside a string or not)."""
    good = draw(json_bytes(valid_messages()))
    at = draw(st.integers(0, len(good)))
    bad = draw(st.sampled_from(INVALID_UTF8))
    value = good[:at] + bad + good[at:]
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    raise AssertionError("the splice must make the value invalid UTF-8")


BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", '"NaN"', '"Infinity"', '"-Infinity"', '"nan"', '"inf"', '"-inf"',
               "1e400", "-1e999"]


@st.composite
def non_finite_embeddings(draw) -> bytes:
    """Raw JSON whose embedding holds NaN or Infinity, as bare tokens, strings or overflowing numbers."""
    numbers = [repr(x) for x in draw(vectors())]
    for _ in range(draw(st.integers(1, 3))):
        numbers.insert(draw(st.integers(0, len(numbers))), draw(st.sampled_from(BAD_NUMBERS)))
    head = json.dumps({"sample_id": draw(ids), "label": draw(labels)})[:-1]
    return f'{head}, "embedding": [{", ".join(numbers)}]}}'.encode()


WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2009\u200a\u2028\u2029\u202f" \
             "\u205f\u3000"


@st.composite
def nested_json(draw, depth: int) -> str:
    value = "1"
    for _ in range(depth):
        value = f'{{"k": {value}}}' if draw(st.booleans()) else f"[{value}]"
    return value


# --- tests --------------------------------------------------------------------------------------------

@fuzz_settings(150)
@given(st.lists(st.one_of(st.binary(max_size=200), st.none()), min_size=1, max_size=8))
def test_random_bytes(values):
    result = Harness().feed(values)
    for record, letter in result.dead_letters:
        # Random bytes are now and then valid JSON (b"0", b"[]"), which is a schema error.
        expected = {"empty"} if record.value is None else {"not_json", "schema"}
        assert letter.error_type in expected


@fuzz_settings(80)
@given(st.lists(non_utf8(), min_size=1, max_size=6))
def test_non_utf8_is_rejected_with_bytes_intact(values):
    result = Harness().feed(values)
    assert len(result.dead_letters) == len(values)
    for _, letter in result.dead_letters:
        assert letter.error_type == "not_json"
        assert letter.encoding == "base64"


@fuzz_settings(50)
@given(st.lists(json_bytes(mutated_messages()), min_size=1, max_size=8))
def test_wrong_types_and_missing_fields(values):
    result = Harness(embedder=FakeEmbedder()).feed(values)
    for _, letter in result.dead_letters:  # all of it is well-formed JSON
        assert letter.error_type in {"schema", "dimension_mismatch"}


@fuzz_settings(20)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), json_junk), min_size=1, max_size=3),
       st.lists(st.sampled_from(("sample_id", "label")), max_size=2))
def test_junk_in_each_field_after_warmup(replacements, deleted):
    harness = Harness(embedder=FakeEmbedder())
    harness.warm_up()
    message = clean_messages(1, start=10_000)[0]
    for name, junk in replacements:
        message[name] = junk
    for name in deleted:
        message.pop(name, None)
    harness.feed([encode(message)])
    harness.feed_clean()


@fuzz_settings(60)
@given(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True))
def test_missing_required_fields_are_schema_errors(missing):
    message = {"sample_id": "x", "label": "cat", "text": "hello", "embedding": [1.0] * DIM}
    for name in missing:
        message.pop(name, None)
    result = Harness(embedder=FakeEmbedder()).feed([encode(message)])
    required_gone = bool({"sample_id", "label"} & set(missing)) or {"text", "embedding"} <= set(missing)
    assert len(result.dead_letters) == (1 if required_gone else 0)
    if required_gone:
        assert result.dead_letters[0][1].error_type == "schema"


@fuzz_settings(100)
@given(st.lists(non_finite_embeddings(), min_size=1, max_size=6))
def test_nan_and_infinity_in_embeddings_are_rejected(values):
    result = Harness().feed(values)
    assert len(result.dead_letters) == len(values)
    for _, letter in result.dead_letters:
        assert letter.error_type == "schema"
        assert "embedding" in letter.reason


@fuzz_settings(16)
@given(st.booleans(), st.lists(st.integers(1, 9), min_size=1, max_size=10))
def test_embedding_dimension_changes_mid_stream(warm, dims):
    harness = Harness(embedder=FakeEmbedder())
    if warm:
        harness.warm_up()
    else:
        harness.feed_clean(3)
    messages = [{"sample_id": f"d{i}", "label": LABELS[i % 2], "embedding": [float(i % 3)] * d}
                for i, d in enumerate(dims)]
    messages.append({"sample_id": "t", "label": "cat", "text": "some text"})  # embedder gives DIM
    result = harness.feed([encode(m) for m in messages])
    mismatched = {r.source.offset for r, letter in result.dead_letters if letter.error_type == "dimension_mismatch"}
    assert len(mismatched) == len(result.dead_letters)
    assert len(mismatched) == sum(d != DIM for d in dims)
    harness.feed_clean()


@fuzz_settings(30)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=12))
def test_first_batch_of_mixed_dimensions(dims):
    """A dataset's dimension is the most common one of its first batch; the others are rejected."""
    harness = Harness()
    messages = [{"sample_id": f"d{i}", "label": LABELS[i % 2], "embedding": [0.5 * i] * d}
                for i, d in enumerate(dims)]
    result = harness.feed([encode(m) for m in messages])
    kept = Counter(dims).most_common(1)[0][1]
    assert len(result.dead_letters) == len(dims) - kept
    assert all(letter.error_type == "dimension_mismatch" for _, letter in result.dead_letters)


@fuzz_settings(40)
@given(st.lists(st.tuples(st.text(alphabet=WHITESPACE, max_size=12), st.booleans()), min_size=1, max_size=8))
def test_empty_and_whitespace_text(texts):
    embedder = FakeEmbedder()
    harness = Harness(embedder=embedder)
    messages = []
    for i, (text, with_embedding) in enumerate(texts):
        message = {"sample_id": f"w{i}", "label": LABELS[i % 2], "text": text}
        if with_embedding:
            message["embedding"] = [float(i)] * DIM
        messages.append(message)
    result = harness.feed([encode(m, ensure_ascii=i % 2 == 0) for i, m in enumerate(messages)])
    assert len(result.dead_letters) == sum(not with_embedding for _, with_embedding in texts)
    assert all(letter.error_type == "schema" for _, letter in result.dead_letters)
    assert embedder.seen == []


@fuzz_settings(60)
@given(st.integers(64, 4096), st.lists(st.integers(-40, 40), min_size=1, max_size=6))
def test_payloads_over_the_size_limit(limit, deltas):
    """A record of exactly the limit is judged; one byte more is ``too_large``, whatever it holds."""
    harness = Harness(max_message_bytes=limit)
    values = []
    for i, delta in enumerate(deltas):
        stub = encode({"sample_id": f"p{i}", "label": "cat", "embedding": [1.0] * DIM, "metadata": {"pad": ""}})
        size = max(limit + delta, len(stub))
        padded = stub.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(stub)) + b'"')
        assert len(padded) == size
        values.append(padded if i % 3 else padded[:-2] + b"\xff}")  # some are junk too: size wins
    result = harness.feed(values)
    too_large = {r.source.offset for r, letter in result.dead_letters if letter.error_type == "too_large"}
    assert too_large == {harness.offset - len(values) + i for i, v in enumerate(values) if len(v) > limit}


@fuzz_settings(10)
@given(st.lists(valid_messages(), min_size=1, max_size=8))
def test_new_labels_mid_stream(messages):
    """Labels (and user-prediction labels) never seen before, arriving after the detectors warmed up."""
    harness = Harness(embedder=FakeEmbedder())
    harness.warm_up()
    result = harness.feed([encode(m) for m in messages])
    assert not result.dead_letters
    harness.feed_clean()


@fuzz_settings(20)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["dup", "dup2", "x"]), st.sampled_from(LABELS + ("new",))),
                         min_size=1, max_size=8), min_size=1, max_size=3))
def test_repeated_sample_ids(batches):
    harness = Harness()
    for b, batch in enumerate(batches):
        messages = [{"sample_id": sid, "label": label, "embedding": [float(b + i % 2)] * DIM}
                    for i, (sid, label) in enumerate(batch)]
        result = harness.feed([encode(m) for m in messages])
        assert not result.dead_letters
        first = Counter(v.sample_id for v in result.verdicts if not v.late)
        assert first == Counter(sid for sid, _ in batch)


@fuzz_settings(30)
@given(st.sampled_from(["sample_id", "label", "dataset", "annotator_id", "text"]),
       st.integers(1_000, 300_000), st.sampled_from(["a", "é", "\u4e2d", "\U0001f600", "\\", '"', "\x00"]))
def test_extremely_long_strings(field, length, char):
    harness = Harness(embedder=FakeEmbedder(), max_message_bytes=600_000)
    message = {"sample_id": "long", "label": "cat", "embedding": [1.0] * DIM, field: char * length}
    value = encode(message, ensure_ascii=length % 2 == 0)
    result = harness.feed([value])
    if len(value) > 600_000:
        assert [letter.error_type for _, letter in result.dead_letters] == ["too_large"]
    else:
        assert not result.dead_letters


@fuzz_settings(60)
@given(st.integers(1, 600).flatmap(nested_json))
def test_deeply_nested_metadata(nested):
    value = f'{{"sample_id": "deep", "label": "cat", "embedding": [1, 2, 3, 4], "metadata": {{"x": {nested}}}}}'
    result = Harness().feed([value.encode()])
    depth = nested.count("[") + nested.count("{")
    if result.dead_letters:
        letter = result.dead_letters[0][1]
        assert letter.error_type == "not_json" and "recursion" in letter.reason
        assert depth > 64, "shallow nesting is valid metadata"


@fuzz_settings(20)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=DIM, max_size=DIM), st.booleans())
@example([1e39, 0.0, 0.0, 0.0], True)   # finite as a float64, infinite as a float32
@example([1e39, 0.0, 0.0, 0.0], False)
def test_extreme_finite_embedding_values(vector, warm):
    """Finite (float64) numbers of any magnitude: accepted or rejected, they must not break the pipeline."""
    harness = Harness()
    if warm:
        harness.warm_up()
    else:
        harness.feed_clean(3)
    harness.feed([encode({"sample_id": "big", "label": "cat", "embedding": vector})])
    harness.feed_clean()  # the next, ordinary batch must still be judged


record_values = st.one_of(
    st.binary(max_size=100),
    st.none(),
    json_bytes(valid_messages()),
    json_bytes(valid_messages(dim=DIM + 1)),
    json_bytes(mutated_messages()),
    json_bytes(valid_messages().map(lambda m: {**m, "dataset": "other"})),
    non_utf8(),
    non_finite_embeddings(),
    json_junk.map(lambda j: json.dumps(j).encode()),
)


@fuzz_settings(12)
@given(st.booleans(), st.lists(st.lists(record_values, min_size=1, max_size=10), min_size=1, max_size=4))
def test_mixed_hostile_stream(warm, batches):
    harness = Harness(embedder=FakeEmbedder())
    if warm:
        harness.warm_up()
    else:
        harness.feed_clean(3)  # fixes the default dataset's dimension, as any real stream would
    totals = Counter()
    for values in batches:
        result = harness.feed(values)
        totals.update(letter.error_type for _, letter in result.dead_letters)
    for reason in ERROR_TYPES:
        assert harness.invalid_count(reason) == totals[reason]
    harness.feed_clean()
    for verdict in harness.pipeline.flush().verdicts:
        assert verdict.late and math.isfinite(verdict.score) and 0.0 <= verdict.score <= 1.0
