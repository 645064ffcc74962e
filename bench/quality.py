"""Detection quality: ``labelwatch audit`` against a cleanlab batch baseline, on the same features.

For every dataset and noise setting, labels are corrupted with a fixed seed, the samples are
written as a JSONL stream of AnnotatedSample lines (features as ``embedding``, shuffled order) and
the real CLI is run over it, exactly as a user would:

    python -m consumer audit INPUT.jsonl --out EVENTS.jsonl --verdicts-out VERDICTS.jsonl [AUDIT ARGS]

Flagged = distinct sample ids in EVENTS; score = a sample's latest ``score`` in VERDICTS (the final
re-audit gives its last word on every sample of the window it re-scores). Side by side, cleanlab's batch method sees the same feature matrix:
5-fold out-of-fold ``predict_proba`` of StandardScaler + LogisticRegression, then
``cleanlab.filter.find_label_issues`` (defaults); its score is ``1 - get_label_quality_scores``.
Baseline results are cached per (dataset, setting, seed) in ``bench/out/``.

Text (reviews, tweets, courses) is embedded once with all-MiniLM-L6-v2, by the service's default
embedding backend unless ``--embedding-backend`` names another, and cached as ``.npy`` under
``bench/out/``; from then on it is a precomputed 384-d vector like every other dataset.

    .venv/bin/python bench/quality.py                                  # everything, writes docs/benchmarks.md
    .venv/bin/python bench/quality.py --datasets digits --no-baseline --no-write --audit-args "--n-clusters 64"
    .venv/bin/python bench/quality.py --sweep-k 4,8,16,32,64,128 --datasets digits,image_segments
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import cpu_model, replace_section  # noqa: E402
from consumer.demo.datasets import DATASETS, LabeledData, corrupted_ids, inject_noise, load, to_messages  # noqa: E402
from consumer.evaluate import auprc, detection_metrics  # noqa: E402,F401  (the metrics `labelwatch evaluate` prints)
from consumer.settings import DEFAULT_EMBEDDING_BACKEND  # noqa: E402

#: setting name -> (noise kind, noise rate)
SETTINGS = {"uniform10": ("uniform", 0.10), "uniform20": ("uniform", 0.20), "pairflip20": ("pairflip", 0.20)}
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
CACHE_DIR = REPO / "bench" / "out"
TARGET_MEAN_RATIO, TARGET_MIN_RATIO, TARGET_REVIEW_FACTOR = 1.05, 0.95, 1.5


# --------------------------------------------------------------------------------------------- metrics

# -------------------------------------------------------------------------------------------- features

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _backend_tag(backend: str) -> str:
    """The cache files' suffix of a backend: none for torch, whose caches came first."""
    return "" if backend == "torch" else f"-{backend}"


def features(name: str, cache_dir: Path = CACHE_DIR, model: str = EMBEDDING_MODEL,
             backend: str = DEFAULT_EMBEDDING_BACKEND) -> LabeledData:
    """A dataset with ``vectors`` set: text datasets are embedded once and cached as ``.npy``."""
    data = load(name)
    if data.vectors is not None:
        return data
    cache = cache_dir / f"{name}-embeddings-{_slug(model)}{_backend_tag(backend)}.npy"
    vectors = None
    if cache.exists():
        vectors = np.load(cache)
        if vectors.shape[0] != len(data):
            print(f"[quality] {cache} has {vectors.shape[0]} rows for {len(data)} texts; re-embedding",
                  file=sys.stderr)
            vectors = None
    if vectors is None:
        from consumer.embedding import make_embedder

        print(f"[quality] embedding {len(data)} {name} texts with {model}, backend {backend} (cached in {cache})",
              file=sys.stderr)
        started = time.perf_counter()
        vectors = make_embedder(model, backend=backend).encode(data.texts)
        print(f"[quality] embedded in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return dataclasses.replace(data, vectors=np.asarray(vectors, dtype=np.float32))


def stream_features(data: LabeledData) -> np.ndarray:
    """The matrix exactly as the JSONL stream carries it (``to_messages`` rounds to 6 decimals)."""
    return np.round(data.vectors.astype(np.float64), 6)


@dataclasses.dataclass
class Case:
    dataset: str
    setting: str
    kind: str
    rate: float
    seed: int
    data: LabeledData
    noisy: np.ndarray
    corrupted: np.ndarray

    @property
    def truth(self) -> set[str]:
        return corrupted_ids(self.data, self.corrupted)

    @property
    def ids(self) -> list[str]:
        return [f"{self.data.name}-{i}" for i in range(len(self.data))]


def make_case(data: LabeledData, setting: str, seed: int) -> Case:
    kind, rate = SETTINGS[setting]
    noisy, corrupted = inject_noise(data.labels, rate, n_classes=len(data.class_names), kind=kind, seed=seed)
    return Case(data.name, setting, kind, rate, seed, data, noisy, corrupted)


# ------------------------------------------------------------------------------------------ labelwatch

def write_stream(case: Case, path: Path) -> None:
    with path.open("wb") as out:
        for message in to_messages(case.data, case.noisy, order_seed=case.seed):
            out.write(orjson.dumps(message) + b"\n")


def run_audit(case: Case, workdir: Path, audit_args: list[str]) -> dict:
    """Run the real CLI over the case's stream; metrics of its events and verdicts."""
    stem = f"{case.dataset}-{case.setting}-{case.seed}"
    source, events, verdicts, counts = (workdir / f"{stem}.jsonl", workdir / f"{stem}-events.jsonl",
                                        workdir / f"{stem}-verdicts.jsonl", workdir / f"{stem}-summary.json")
    write_stream(case, source)
    command = [sys.executable, "-m", "consumer", "audit", str(source), "--out", str(events),
               "--verdicts-out", str(verdicts), "--summary-out", str(counts), *audit_args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"labelwatch audit failed (exit {done.returncode}) on {stem}: "
                           f"{shlex.join(command[1:])}\n{done.stderr[-4000:]}")
    event_ids = [orjson.loads(line)["sample_id"] for line in events.read_bytes().splitlines() if line.strip()]
    flagged = set(event_ids)
    summary = json.loads(counts.read_text())  # the audit's own counts (events are written live ones first)
    live_flagged = set(event_ids[:summary["flagged_live"]])
    scores: dict[str, float] = {}
    n_verdicts = n_late = 0
    flagged_verdicts: set[str] = set()
    for line in verdicts.read_bytes().splitlines():
        if not line.strip():
            continue
        record = orjson.loads(line)
        n_verdicts += 1
        n_late += bool(record.get("late"))
        sid = record["sample_id"]
        scores[sid] = float(record["score"])  # the latest verdict: the final re-audit's, where there is one
        if record.get("flagged"):
            flagged_verdicts.add(sid)
    ids = case.ids
    result = detection_metrics(flagged, case.truth, len(ids))
    result.update({
        "live": detection_metrics(live_flagged, case.truth, len(ids)),
        "auprc": auprc(scores, case.truth, ids),
        "seconds": seconds,
        "n_events": len(event_ids),
        "n_verdicts": n_verdicts,
        "n_late_verdicts": n_late,
        "n_without_verdict": sum(i not in scores for i in ids),
        "flagged_events_without_flagged_verdict": len(flagged - flagged_verdicts),
        "flagged_verdicts_without_event": len(flagged_verdicts - flagged),
        "rejected": summary["rejected"],
        "cli_summary": (done.stderr.strip().splitlines() or [""])[-1],
    })
    return result


# -------------------------------------------------------------------------------------------- cleanlab

def _baseline_cache(case: Case, cache_dir: Path, backend: str) -> Path:
    model = f"-{_slug(EMBEDDING_MODEL)}{_backend_tag(backend)}" if case.data.texts is not None else ""
    return cache_dir / f"cleanlab-{case.dataset}{model}-{case.setting}-seed{case.seed}.json"


def cleanlab_baseline(case: Case, cache_dir: Path = CACHE_DIR, refresh: bool = False,
                      backend: str = DEFAULT_EMBEDDING_BACKEND) -> dict:
    """cleanlab's batch method on the stream's features; cached as JSON per (dataset, setting, seed, backend)."""
    cache = _baseline_cache(case, cache_dir, backend)
    if cache.exists() and not refresh:
        result = json.loads(cache.read_text())
        result["cached"] = True
        return result
    import cleanlab
    import sklearn

    from consumer.evaluate import cleanlab_reference

    started = time.perf_counter()
    result = cleanlab_reference(stream_features(case.data), case.noisy, case.ids, case.truth, case.seed)
    result.update({"seconds": time.perf_counter() - started, "cleanlab": cleanlab.__version__,
                   "sklearn": sklearn.__version__})
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")
    result["cached"] = False
    return result


# ------------------------------------------------------------------------------------------- reporting

def _nproc() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", ".", ":(exclude)docs"], cwd=REPO,
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # the hash of the code's diff (docs excluded) tells apart runs on different uncommitted states
    return head + (f" with uncommitted changes (diff sha1 {hashlib.sha1(diff).hexdigest()[:10]})" if diff else "")


def command_line() -> str:
    def short(path: Path) -> str:
        path = Path(os.path.abspath(path))
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    return shlex.join([short(Path(sys.executable)), short(Path(sys.argv[0])), *sys.argv[1:]])


def _environment(audit_args: list[str], embedding_backend: str = DEFAULT_EMBEDDING_BACKEND) -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": _nproc(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "git": _git_revision(),
        "command": command_line(),
        "audit_command": "python -m consumer audit INPUT.jsonl --out EVENTS.jsonl --verdicts-out VERDICTS.jsonl"
                         + (" " + shlex.join(audit_args) if audit_args else ""),
        "labelwatch_env": {k: v for k, v in os.environ.items() if k.startswith("LABELWATCH_")},
        "embedding_backend": embedding_backend,
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _header(env: dict, what: str) -> list[str]:
    lines = [f"Measured {env['date']} on {env['nproc']} cores (nproc; {env['cpu']}), Python {env['python']}, "
             f"git {env['git']}.", "", "Command:", "", "```sh", env["command"], "```", "",
             f"{what} `{env['audit_command']}` (detector defaults unless given there).", ""]
    if env["labelwatch_env"]:
        lines += [f"Environment: {' '.join(f'{k}={v}' for k, v in sorted(env['labelwatch_env'].items()))}", ""]
    return lines


def quality_table(rows: list[dict], env: dict, seed: int) -> str:
    baseline = any(r.get("cleanlab") for r in rows)
    lines = ["## Detection quality: labelwatch vs cleanlab", ""] + _header(env, "Each row runs")
    lines += [
        f"Noise and stream order seeded with {seed}; pair-flip moves class c to c+1. Flagged = distinct "
        "sample ids in EVENTS; labelwatch AUPRC scores each sample by its latest verdict `score` (the final "
        "re-audit's, which gives one to every sample of the window it re-scores). "
        "cleanlab = 5-fold (stratified, shuffled, same seed) out-of-fold `predict_proba` of "
        "StandardScaler + LogisticRegression(max_iter=1000) on the same features, then "
        "`cleanlab.filter.find_label_issues` (defaults); AUPRC score = 1 - `get_label_quality_scores`. "
        f"Texts = all-MiniLM-L6-v2 embeddings (384-d, backend {env.get('embedding_backend', 'torch')}) for "
        "both. Review = flagged / n "
        "(×rate = review fraction / true noise rate). Wall s: labelwatch = the whole CLI process "
        "(start-up included); cleanlab = cross-validation + cleanlab (from the cache when marked *). "
        "Live = the events sent while streaming (first verdicts and re-audits), before the final re-audit "
        "that only `audit` runs at the end of its input: what `labelwatch run` sends.", ""]
    head = "| dataset | noise | n | LW P | LW R | LW F1 | LW AUPRC | LW review (×rate) | live P | live R | live review | LW s |"
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if baseline:
        head += " CL P | CL R | CL F1 | CL AUPRC | CL review (×rate) | CL s | F1 ratio LW/CL |"
        rule += "---:|---:|---:|---:|---:|---:|---:|"
    lines += [head, rule]
    for r in rows:
        lw = r["labelwatch"]
        line = (f"| {r['dataset']} | {r['setting']} | {lw['n']} | {_f(lw['precision'])} | {_f(lw['recall'])} "
                f"| {_f(lw['f1'])} | {_f(lw['auprc'])} | {_f(lw['review_fraction'])} "
                f"({_f(lw['review_fraction'] / r['rate'], 2)}) | {_f(lw['live']['precision'])} "
                f"| {_f(lw['live']['recall'])} | {_f(lw['live']['review_fraction'])} | {_f(lw['seconds'], 1)} |")
        if baseline:
            cl = r["cleanlab"]
            line += (f" {_f(cl['precision'])} | {_f(cl['recall'])} | {_f(cl['f1'])} | {_f(cl['auprc'])} "
                     f"| {_f(cl['review_fraction'])} ({_f(cl['review_fraction'] / r['rate'], 2)}) "
                     f"| {_f(cl['seconds'], 1)}{'*' if cl.get('cached') else ''} | {_f(r['f1_ratio'])} |")
        lines.append(line)
    lines.append("")
    lines += [f"- {line}" for line in targets(rows)["lines"]]
    return "\n".join(lines)


def targets(rows: list[dict]) -> dict:
    """The targets: F1 ratio >= 0.95 on every row and >= 1.05 on average; review fraction <= 1.5 x the
    noise rate, or at most cleanlab's own; AUPRC >= cleanlab's; live precision >= cleanlab's precision."""
    out: dict = {"lines": []}
    ratios = [r["f1_ratio"] for r in rows if r.get("f1_ratio") is not None]
    if ratios:
        mean, low = statistics.mean(ratios), min(ratios)
        worst = min(rows, key=lambda r: r["f1_ratio"] if r.get("f1_ratio") is not None else math.inf)
        out.update(mean_ratio=mean, min_ratio=low, mean_met=mean >= TARGET_MEAN_RATIO,
                   min_met=low >= TARGET_MIN_RATIO)
        out["lines"] += [
            f"Mean F1 ratio labelwatch/cleanlab: **{mean:.3f}** (target ≥ {TARGET_MEAN_RATIO}: "
            f"{'met' if out['mean_met'] else 'NOT met'}).",
            f"Min F1 ratio: **{low:.3f}** on {worst['dataset']} {worst['setting']} (target ≥ {TARGET_MIN_RATIO}: "
            f"{'met' if out['min_met'] else 'NOT met'}).",
        ]
    else:
        out["lines"].append("F1 ratio: no baseline in this run (`--no-baseline`).")

    def review_ok(r):
        allowed = TARGET_REVIEW_FACTOR * r["rate"]
        if r.get("cleanlab"):
            allowed = max(allowed, r["cleanlab"]["review_fraction"])
        return r["labelwatch"]["review_fraction"] <= allowed + 1e-9

    factors = [r["labelwatch"]["review_fraction"] / r["rate"] for r in rows]
    ok = sum(review_ok(r) for r in rows)
    out.update(review_factor_max=max(factors), review_met=ok == len(rows))
    out["lines"].append(
        f"labelwatch review fraction ≤ {TARGET_REVIEW_FACTOR} × noise rate, or ≤ cleanlab's own: {ok}/{len(rows)} rows "
        f"(max {max(factors):.2f}× the noise rate; {'met' if out['review_met'] else 'NOT met'}).")
    out["all_met"] = out["review_met"]
    if ratios:
        with_baseline = [r for r in rows if r.get("cleanlab")]
        auprc_ok = sum(r["labelwatch"]["auprc"] >= r["cleanlab"]["auprc"] for r in with_baseline)
        live_ok = sum(r["labelwatch"]["live"]["precision"] >= r["cleanlab"]["precision"] for r in with_baseline)
        out.update(auprc_met=auprc_ok == len(with_baseline), live_met=live_ok == len(with_baseline))
        out["lines"] += [
            f"AUPRC ≥ cleanlab's: {auprc_ok}/{len(with_baseline)} rows ({'met' if out['auprc_met'] else 'NOT met'}).",
            f"Live precision ≥ cleanlab's precision: {live_ok}/{len(with_baseline)} rows "
            f"({'met' if out['live_met'] else 'NOT met'}).",
        ]
        out["all_met"] = all(out[k] for k in ("mean_met", "min_met", "review_met", "auprc_met", "live_met"))
        out["lines"].append(f"All targets met: **{'yes' if out['all_met'] else 'no'}**.")
    return out


# ------------------------------------------------------------------------------------------------ runs

def evaluate(args: argparse.Namespace, audit_args: list[str], workdir: Path) -> list[dict]:
    rows = []
    for name in args.datasets:
        data = features(name, args.cache_dir, backend=args.embedding_backend)
        for setting in args.settings:
            case = make_case(data, setting, args.seed)
            print(f"[quality] {name} {setting}: labelwatch audit ...", file=sys.stderr, flush=True)
            row = {"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate, "seed": args.seed,
                   "n": len(data), "n_classes": len(data.class_names), "dim": int(data.vectors.shape[1]),
                   "labelwatch": run_audit(case, workdir, audit_args)}
            lw = row["labelwatch"]
            print(f"[quality]   labelwatch P {lw['precision']:.3f} R {lw['recall']:.3f} F1 {lw['f1']:.3f} "
                  f"AUPRC {lw['auprc']:.3f} review {lw['review_fraction']:.3f} in {lw['seconds']:.1f}s",
                  file=sys.stderr, flush=True)
            if not args.no_baseline:
                cl = row["cleanlab"] = cleanlab_baseline(case, args.cache_dir, args.refresh_baseline, args.embedding_backend)
                row["f1_ratio"] = lw["f1"] / cl["f1"] if cl["f1"] > 0 else None
                print(f"[quality]   cleanlab   P {cl['precision']:.3f} R {cl['recall']:.3f} F1 {cl['f1']:.3f} "
                      f"AUPRC {cl['auprc']:.3f} review {cl['review_fraction']:.3f} in {cl['seconds']:.1f}s"
                      f"{' (cached)' if cl['cached'] else ''}; F1 ratio {_f(row['f1_ratio'])}",
                      file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def sweep(args: argparse.Namespace, audit_args: list[str], workdir: Path, ks: list[int]) -> list[dict]:
    rows = []
    for name in args.datasets:
        data = features(name, args.cache_dir, backend=args.embedding_backend)
        for setting in args.settings:
            case = make_case(data, setting, args.seed)
            for k in ks:
                print(f"[quality] {name} {setting} K={k} ...", file=sys.stderr, flush=True)
                lw = run_audit(case, workdir, [*audit_args, "--n-clusters", str(k)])
                print(f"[quality]   review {lw['review_fraction']:.3f} R {lw['recall']:.3f} "
                      f"P {lw['precision']:.3f} F1 {lw['f1']:.3f} in {lw['seconds']:.1f}s", file=sys.stderr,
                      flush=True)
                rows.append({"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate,
                             "seed": args.seed, "k": k, "labelwatch": lw})
            if not args.no_baseline:
                rows.append({"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate,
                             "seed": args.seed, "k": None,
                             "cleanlab": cleanlab_baseline(case, args.cache_dir, args.refresh_baseline, args.embedding_backend)})
    return rows


def flat_groups(rows: list[dict]) -> list[str]:
    """The dataset/settings whose sweep points are all identical: K made no difference there."""
    groups: dict[str, set] = {}
    for r in rows:
        if r.get("k") is not None:
            m = r["labelwatch"]
            groups.setdefault(f"{r['dataset']} {r['setting']}", set()).add(
                (m["n_flagged"], m["tp"], round(m["auprc"], 12)))
    return [name for name, points in groups.items() if len(points) == 1 and len(
        [r for r in rows if r.get("k") is not None and f"{r['dataset']} {r['setting']}" == name]) > 1]


def sweep_table(rows: list[dict], env: dict, seed: int, image: str | None) -> str:
    lines = ["## K sweep: review effort against errors caught", ""] + _header(
        env, "Each point runs") + [
        f"One audit per K (`--n-clusters K`, placed after any `--audit-args`); noise and stream order seeded "
        f"with {seed}. Review fraction = flagged / n is the effort; recall is the share of corrupted labels "
        "caught. A random reviewer catches errors in proportion to effort (recall = review fraction). "
        "cleanlab rows are the batch baseline at the same noise, for reference.", ""]
    if image:
        lines += [f"![K sweep]({image})", ""]
    flat = flat_groups(rows)
    if flat:
        lines += [f"**Note:** K changed neither the flagged set nor any score for {', '.join(flat)}: under these "
                  "audit args the K-dependent cluster detector does not decide the verdicts (see `--voters`).", ""]
    lines += ["| dataset | noise | K | review fraction | ×rate | recall | precision | F1 | AUPRC | wall s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r.get("labelwatch") or r["cleanlab"]
        k = str(r["k"]) if r["k"] is not None else "cleanlab"
        lines.append(f"| {r['dataset']} | {r['setting']} | {k} | {_f(m['review_fraction'])} "
                     f"| {_f(m['review_fraction'] / r['rate'], 2)} | {_f(m['recall'])} | {_f(m['precision'])} "
                     f"| {_f(m['f1'])} | {_f(m['auprc'])} | {_f(m['seconds'], 1)} |")
    return "\n".join(lines)


def sweep_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["setting"]), []).append(r)
    top = 0.0
    for (name, setting), group in groups.items():
        points = sorted((r for r in group if r["k"] is not None), key=lambda r: r["labelwatch"]["review_fraction"])
        xs = [r["labelwatch"]["review_fraction"] for r in points]
        ys = [r["labelwatch"]["recall"] for r in points]
        (line,) = ax.plot(xs, ys, marker="o", label=f"{name} {setting}")
        same: dict[tuple[float, float], list[int]] = {}  # identical points share one label
        for r, x, y in zip(points, xs, ys):
            same.setdefault((x, y), []).append(r["k"])
        for (x, y), ks in same.items():
            ax.annotate("K=" + ",".join(map(str, sorted(ks))), (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=line.get_color())
        top = max([top, *xs])
        for r in group:
            if r["k"] is None:
                cl = r["cleanlab"]
                ax.plot([cl["review_fraction"]], [cl["recall"]], marker="*", markersize=12, linestyle="none",
                        color=line.get_color())
                top = max(top, cl["review_fraction"])
        rate = group[0]["rate"]
        ax.axvline(rate, color=line.get_color(), linewidth=0.6, linestyle=":", alpha=0.6)
    top = min(1.0, top * 1.15 + 0.01)
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="random reviewer (recall = effort)")
    if any(r["k"] is None for r in rows):
        ax.plot([], [], marker="*", markersize=10, linestyle="none", color="black", label="cleanlab batch baseline")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("review fraction (flagged / n): effort")
    ax.set_ylabel("recall (corrupted labels caught)")
    ax.set_title("labelwatch audit: review effort vs errors caught, by K (--n-clusters)\n"
                 "dotted verticals: true noise rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _csv(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", type=lambda v: _csv(v, DATASETS, "dataset"), default=list(DATASETS),
                        help=f"Comma-separated subset of {','.join(DATASETS)} (default: all).")
    parser.add_argument("--settings", type=lambda v: _csv(v, SETTINGS, "setting"), default=list(SETTINGS),
                        help=f"Comma-separated subset of {','.join(SETTINGS)} (default: all).")
    parser.add_argument("--audit-args", default="", help='Extra flags for `labelwatch audit`, e.g. "--n-clusters 64".')
    parser.add_argument("--seed", type=int, default=0, help="Seed of the noise, the stream order and the CV folds.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown file to update.")
    parser.add_argument("--no-write", action="store_true", help="Print only; write neither markdown nor plot.")
    parser.add_argument("--no-baseline", action="store_true", help="Skip cleanlab (fast tuning loops).")
    parser.add_argument("--refresh-baseline", action="store_true", help="Recompute cached cleanlab results.")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="Embeddings and baseline cache.")
    parser.add_argument("--embedding-backend", choices=("torch", "onnx", "onnx-int8"),
                        default=DEFAULT_EMBEDDING_BACKEND, help=f"What embeds the text datasets (default {DEFAULT_EMBEDDING_BACKEND}, the service's).")
    parser.add_argument("--json-out", type=Path, help="Write every raw number here as JSON.")
    parser.add_argument("--sweep-k", type=lambda v: [int(k) for k in v.split(",") if k.strip()],
                        help="Comma-separated K values: run the K sweep instead of the quality table.")
    parser.add_argument("--plot", type=Path, help="K-sweep PNG (default: k_sweep.png next to --out).")
    args = parser.parse_args(argv)
    audit_args = shlex.split(args.audit_args)
    env = _environment(audit_args, args.embedding_backend)
    if env["labelwatch_env"]:
        print(f"[quality] note: LABELWATCH_* variables are set and reach the audit: {env['labelwatch_env']}",
              file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labelwatch-quality-") as tmp:
        if args.sweep_k:
            rows = sweep(args, audit_args, Path(tmp), args.sweep_k)
        else:
            rows = evaluate(args, audit_args, Path(tmp))
    env["total_seconds"] = time.perf_counter() - started
    if args.sweep_k:
        plot = args.plot or args.out.parent / "k_sweep.png"
        image = os.path.relpath(plot, args.out.parent) if not args.no_write else None
        text = sweep_table(rows, env, args.seed, image)
        summary: dict = {"k_without_effect": flat_groups(rows)}
        section = "k-sweep"
    else:
        text = quality_table(rows, env, args.seed)
        summary = {k: v for k, v in targets(rows).items() if k != "lines"}
        section = "quality"
    text += f"\n\nTotal wall time of this run: {env['total_seconds']:.0f}s."
    print(text)
    if not args.no_write:
        if args.sweep_k:
            sweep_plot(rows, plot)
            print(f"[quality] wrote {plot}", file=sys.stderr)
        replace_section(args.out, section, text)
        print(f"[quality] wrote section {section!r} of {args.out}", file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"environment": env, "audit_args": audit_args, "mode": section,
                                             "rows": rows, "targets": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
