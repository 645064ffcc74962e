"""What a reviewer is shown of a flagged sample's neighbours: the start of each recent sample's text,
or its small image, kept per dataset for the last :data:`PREVIEWS_KEPT` samples."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from schemas import AnnotatedSample, displayable_image
from schemas.review import SNIPPET_CHARS, THUMBNAIL_CHARS

PREVIEWS_KEPT = 20_000
"""Samples whose preview a dataset keeps; an older neighbour shows its id only."""
PREVIEW_CHARS = 8_000_000
"""And at most this many characters of snippets and thumbnails in all (checkpoints save them)."""


def snippet_of(text: str | None) -> str | None:
    """The start of ``text``: at most :data:`~schemas.review.SNIPPET_CHARS` characters, and an ellipsis where cut.

    >>> snippet_of("a" * 300)[-3:], len(snippet_of("a" * 300)), snippet_of("  short  "), snippet_of(None)
    ('aa…', 201, 'short', None)
    """
    if not text or not text.strip():
        return None
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…"


class Previews:
    """Each recent sample's ``(snippet, thumbnail)``, by sample id, the oldest forgotten first beyond
    ``capacity`` samples or ``max_chars`` characters.

    >>> previews = Previews(capacity=1)
    >>> previews.remember([AnnotatedSample(sample_id="a", label="x", text="a dog"),
    ...                    AnnotatedSample(sample_id="b", label="x", embedding=[1.0],
    ...                                    metadata={"image_url": "https://example.org/b.png"})])
    >>> previews.of("a"), previews.of("b")
    (None, (None, 'https://example.org/b.png'))
    """

    def __init__(self, capacity: int = PREVIEWS_KEPT, max_chars: int = PREVIEW_CHARS):
        self.capacity, self.max_chars = capacity, max_chars
        self._items: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._chars = 0

    def saved(self) -> OrderedDict:
        """The previews as a plain ordered dict, for a checkpoint (:meth:`restored` takes it back)."""
        return OrderedDict(self._items)

    @classmethod
    def restored(cls, items: OrderedDict) -> Previews:
        previews = cls()
        previews._items = OrderedDict(items)
        previews._chars = sum(map(_size, previews._items.values()))
        return previews

    def remember(self, samples: Iterable[AnnotatedSample]) -> None:
        for sample in samples:
            preview = (snippet_of(sample.text), displayable_image(sample.metadata.get("image_url"), THUMBNAIL_CHARS))
            self._chars -= _size(self._items.pop(sample.sample_id, (None, None)))
            if preview != (None, None):
                self._items[sample.sample_id] = preview
                self._chars += _size(preview)
        while self._items and (len(self._items) > self.capacity or self._chars > self.max_chars):
            self._chars -= _size(self._items.popitem(last=False)[1])

    def of(self, sample_id: str) -> tuple[str | None, str | None] | None:
        return self._items.get(sample_id)


def _size(preview: tuple[str | None, str | None]) -> int:
    return sum(len(part) for part in preview if part)
