"""The committed JSON Schema files must match the wire models they document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import schemas
from schemas import json_schemas

SCHEMA_DIR = Path(schemas.__file__).parent / "json"
REGENERATE = "the committed schema is stale: run `labelwatch schemas` and commit schemas/json/"


def rendered(schema: dict) -> str:
    """The exact text `labelwatch schemas` writes."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def test_there_are_schemas():
    assert set(json_schemas()) == {"annotated_sample", "review_event", "dead_letter", "sample_verdict", "correction"}


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_file_is_current(name):
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.is_file(), f"{path} is missing: run `labelwatch schemas` to write it"
    committed = path.read_text(encoding="utf-8")
    assert committed == rendered(json_schemas()[name]), f"{path.name}: {REGENERATE}"


def test_no_orphan_schema_files():
    committed = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert committed == set(json_schemas()), f"schemas/json/ and the models differ: {REGENERATE}"


def test_cli_writes_the_same_files(tmp_path):
    from consumer.cli import main

    assert main(["schemas", "--out", str(tmp_path)]) == 0
    for name, schema in json_schemas().items():
        assert (tmp_path / f"{name}.schema.json").read_text(encoding="utf-8") == rendered(schema)


VALID_MESSAGE = {
    "sample_id": "a1",
    "label": "cat",
    "dataset": "pets",
    "embedding": [0.1, -0.2, 3.0],
    "prediction": {"label": "dog", "probabilities": {"dog": 0.7, "cat": 0.3}},
    "annotated_at": "2024-05-01T12:30:00Z",
}


def test_sample_message_validates_against_committed_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMA_DIR / "annotated_sample.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(VALID_MESSAGE)
    # and the schema is not vacuous: what the model rejects for structural reasons, so does it
    for bad in ({k: v for k, v in VALID_MESSAGE.items() if k != "label"},
                {**VALID_MESSAGE, "sample_id": ""},
                {**VALID_MESSAGE, "unexpected": 1},
                {**VALID_MESSAGE, "embedding": "0.1,0.2"}):
        assert not validator.is_valid(bad), bad
