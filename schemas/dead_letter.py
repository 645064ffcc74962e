"""A rejected input record, kept whole with the reason it was rejected."""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict, Field

from schemas.review import SourcePosition


class DeadLetter(BaseModel):
    """An input record that labelwatch could not process.

    The original bytes survive untouched: as text when they are valid UTF-8, otherwise base64.
    A record too large to travel whole keeps its first ``keep_bytes`` bytes, with
    ``original_truncated`` set; the whole record stays at ``source`` in the input topic.

    >>> d = DeadLetter.from_bytes(b"\\xff\\xfe", reason="not UTF-8")
    >>> (d.encoding, d.original_bytes())
    ('base64', b'\\xff\\xfe')
    >>> DeadLetter.from_bytes(b'{"x": 1}', reason="missing label").original
    '{"x": 1}'
    >>> cut = DeadLetter.from_bytes(b"a" * 100, reason="too large", keep_bytes=10)
    >>> cut.original, cut.original_truncated, cut.original_size
    ('aaaaaaaaaa', True, 100)
    """

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="Why the record was rejected, readable by a human.")
    error_type: str = Field(default="invalid", description="A short machine-readable kind of rejection.")
    original: str | None = Field(description="The original record value, as text or base64.")
    encoding: str = Field(default="utf-8", pattern="^(utf-8|base64)$")
    source: SourcePosition | None = None
    original_size: int | None = Field(default=None, ge=0, description="Size of the original value in bytes.")
    original_truncated: bool = Field(
        default=False, description="Only the first bytes of the original are kept here; the record is at `source`.")
    exception: str | None = Field(
        default=None, description="Qualified class of the exception that rejected it, when one was raised.")

    @classmethod
    def from_bytes(
        cls,
        value: bytes | None,
        *,
        reason: str,
        error_type: str = "invalid",
        source: SourcePosition | None = None,
        exception: BaseException | None = None,
        keep_bytes: int | None = None,
    ) -> DeadLetter:
        common = dict(reason=reason, error_type=error_type, source=source,
                      exception=f"{type(exception).__module__}.{type(exception).__qualname__}" if exception else None)
        if value is None:
            return cls(original=None, **common)
        common["original_size"] = len(value)
        if keep_bytes is not None and len(value) > keep_bytes:
            value, common["original_truncated"] = value[:keep_bytes], True
        try:
            return cls(original=value.decode("utf-8"), **common)
        except UnicodeDecodeError:
            return cls(original=base64.b64encode(value).decode("ascii"), encoding="base64", **common)

    def original_bytes(self) -> bytes | None:
        """The record value exactly as it arrived."""
        if self.original is None:
            return None
        if self.encoding == "base64":
            return base64.b64decode(self.original)
        return self.original.encode("utf-8")
