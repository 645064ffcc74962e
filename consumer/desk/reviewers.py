"""Who may review: ``reviewer_id:token`` pairs from a file or ``LABELWATCH_REVIEWERS``. Tokens are secrets."""

from __future__ import annotations

import hmac
from pathlib import Path


class Reviewers:
    """Reviewer ids and their tokens; :meth:`identify` finds who a token belongs to.

    >>> reviewers = Reviewers.parse("ana:t0k3n-ana, bo:t0k3n-bo")
    >>> reviewers.identify("t0k3n-bo"), reviewers.identify("guess")
    ('bo', None)
    >>> reviewers
    Reviewers(ana, bo)
    """

    def __init__(self, tokens: dict[str, str]):
        if not tokens:
            raise ValueError("no reviewers: give --reviewers-file or LABELWATCH_REVIEWERS (reviewer_id:token)")
        self._tokens = dict(tokens)

    def __repr__(self) -> str:  # never the tokens
        return f"Reviewers({', '.join(sorted(self._tokens))})"

    @property
    def ids(self) -> list[str]:
        return sorted(self._tokens)

    @classmethod
    def parse(cls, text: str) -> Reviewers:
        """``id:token`` entries separated by commas or new lines; ``#`` starts a comment line."""
        tokens: dict[str, str] = {}
        for number, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            reviewer, sep, token = (part.strip() for part in entry.partition(":"))
            if not sep or not reviewer or len(token) < 8:
                raise ValueError(f"reviewers entry {number}: expected reviewer_id:token with a token of 8 characters "
                                 "or more")  # the entry itself may hold a token: not repeated here
            if reviewer in tokens:
                raise ValueError(f"reviewers entry {number}: reviewer {reviewer!r} appears twice")
            if token in tokens.values():
                raise ValueError(f"reviewers entry {number}: two reviewers share a token")
            tokens[reviewer] = token
        return cls(tokens)

    @classmethod
    def load(cls, path: str | None, inline: str | None) -> Reviewers:
        if path and inline:
            raise ValueError("give reviewers as --reviewers-file or LABELWATCH_REVIEWERS, not both")
        if path:
            return cls.parse(Path(path).read_text(encoding="utf-8"))
        return cls.parse(inline or "")

    def identify(self, token: str) -> str | None:
        """The reviewer whose token this is, compared in constant time; ``None`` for no one."""
        found = None
        for reviewer, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = reviewer
        return found
