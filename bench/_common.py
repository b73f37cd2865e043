"""Shared helpers of the benchmarks: cached test registries, the listing baselines, timing, tables.

Registries are built once and cached under ``$TMPDIR/flask-model-registry-bench`` (set
``BENCH_REBUILD=1`` to rebuild them). Timings use :func:`time.perf_counter`; measurements that are
compared run interleaved, round by round, and report the median of the rounds. Nothing is dropped
from the OS page cache: "cold" means a fresh process or a fresh :class:`ModelRegistry` instance.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the example app's model class, pickled by reference
    sys.path.insert(0, str(REPO))

import semver  # noqa: E402

from example_app.model import LinearModel  # noqa: E402
from flask_model_registry import ModelRegistry  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "flask-model-registry-bench"
#: Bump when the generated registries change shape, so stale caches are not reused.
LAYOUT = 1
MIB = 1 << 20


# registries ---------------------------------------------------------------------------------------


def version_name(i: int) -> str:
    """The ``i``-th version: minors and patches past 9 (``1.10.0`` > ``1.9.0``), one in ten an rc."""
    base = f"{1 + i // 1000}.{(i // 25) % 40}.{i % 25}"
    return f"{base}-rc.1" if i % 10 == 9 else base


def user_metadata(i: int) -> dict[str, Any]:
    """Metadata a training job would attach, about the size of the sample registry's."""
    return {
        "stage": "prod" if i % 7 == 0 else "staging" if i % 3 == 0 else "archived",
        "description": f"Churn score, linear on three usage features, retrained on batch {i}",
        "features": ["sessions_per_week", "days_since_login", "support_tickets"],
        "metrics": {"auc": round(0.8 + (i % 97) / 1000, 3), "logloss": round(0.45 - (i % 89) / 1000, 3)},
        "training": {"rows": 48_000 + i, "dataset": f"churn-{i:05d}"},
    }


def cached_dir(name: str, build: Callable[[Path], None]) -> Path:
    """``CACHE/name``, built by ``build`` into a hidden folder and renamed into place when done."""
    target = CACHE / f"v{LAYOUT}-{name}"
    if target.exists() and os.environ.get("BENCH_REBUILD") != "1":
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging = CACHE / f".building-{uuid.uuid4().hex}"
    started = time.perf_counter()
    try:
        build(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"(built {target} in {time.perf_counter() - started:.1f} s; cached for later runs)")
    return target


def saved_registry(n: int) -> Path:
    """A registry of ``n`` versions published with :meth:`ModelRegistry.save_model`, as a job would."""

    def build(root: Path) -> None:
        registry = ModelRegistry(root, watch=False)
        for i in range(n):
            model = LinearModel(weights=(0.4 + i / 1e4, -1.3, 2.05), bias=0.5)
            registry.save_model(version_name(i), model, user_metadata(i), actor="bench")

    return cached_dir(f"saved-{n}", build)


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    chunk = bytes(min(size, MIB))
    left = size
    while left:
        digest.update(chunk[: min(left, MIB)])
        left -= min(left, MIB)
    return digest.hexdigest()


def written_registry(n: int, artefact_size: int) -> Path:
    """``n`` versions written directly in the layout, each ``model.pkl`` a sparse file of zeros.

    The metadata is what :meth:`ModelRegistry.save_model` writes (with the true size and sha256 of
    the zeros); the artefact is made with ``truncate``, so 64 MiB ones take no disk space.
    """

    def build(root: Path) -> None:
        sha = _zeros_sha256(artefact_size)
        for i in range(n):
            version = version_name(i)
            folder = root / "versions" / version
            folder.mkdir(parents=True)
            with open(folder / "model.pkl", "wb") as f:
                f.truncate(artefact_size)
            artifact = {
                "file": "model.pkl",
                "sha256": sha,
                "size": artefact_size,
                "serializer": "cloudpickle",
            }
            written = {"version": version, "created_at": "2026-01-01T00:00:00.000Z", "artifact": artifact}
            data = json.dumps({**written, **user_metadata(i)}, indent=2) + "\n"
            (folder / "metadata.json").write_text(data)

    return cached_dir(f"written-{n}-{artefact_size}", build)


# listing baselines --------------------------------------------------------------------------------


def floor_listing(root: Path) -> list[tuple[Any, str, dict[str, Any]]]:
    """The floor: one ``os.scandir``, one read and ``json.loads`` per version, one sort by an int.

    The integer is the inode ``scandir`` already returns, so the floor pays no version parsing,
    no validity check and no ``stat``: nothing any real listing could do without.
    """
    items = []
    with os.scandir(root / "versions") as entries:
        for entry in entries:
            with open(os.path.join(entry.path, "metadata.json"), "rb") as f:
                items.append((entry.inode(), entry.name, json.loads(f.read())))
    items.sort(key=itemgetter(0))
    return items


def naive_listing(root: Path) -> list[tuple[Any, str, dict[str, Any]]]:
    """The naive loop: ``os.scandir``, ``semver.Version.parse`` per name, read + ``json.loads``, sort."""
    items = []
    with os.scandir(root / "versions") as entries:
        for entry in entries:
            try:
                version = semver.Version.parse(entry.name)
            except ValueError:
                continue
            with open(os.path.join(entry.path, "metadata.json"), "rb") as f:
                items.append((version, entry.name, json.loads(f.read())))
    items.sort(key=itemgetter(0))
    return items


def answer_items(root: Path) -> list[dict[str, Any]]:
    """What ``GET /models`` answers, built from the floor listing."""
    return [{"version": name, "metadata": metadata} for _, name, metadata in floor_listing(root)]


# timing -------------------------------------------------------------------------------------------


def per_call(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn``, over ``number`` back-to-back calls.

    The last result is released after the clock stops, so a single call's teardown (a registry's
    inotify descriptor, say) is not counted.
    """
    start = time.perf_counter()
    for _ in range(number):
        result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed / number


def interleaved(
    cases: Mapping[str, Callable[[], object]], *, rounds: int, number: int = 1, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per call of each case, measured in alternating order, round by round.

    Each round times ``number`` calls of every case (garbage collected between cases, not during),
    so drifts in CPU frequency or background load hit all cases alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values() if warmup else ():  # imports, first-call caches
        fn()
    items = list(cases.items())
    for round_ in range(rounds):
        for name, fn in items if round_ % 2 == 0 else reversed(items):
            gc.collect()
            samples[name].append(per_call(fn, number))
    return {name: statistics.median(values) for name, values in samples.items()}


# reporting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the ratio must be: at most ``bound`` (or at least, when ``higher_is_better``)."""

    text: str
    bound: float
    higher_is_better: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.higher_is_better else ratio <= self.bound


@dataclass(frozen=True)
class Row:
    """One figure next to its baseline; ``ratio`` is figure / baseline."""

    what: str
    value: float
    baseline_name: str
    baseline: float
    target: Target | None = None
    unit: str = "s"

    @property
    def ratio(self) -> float:
        return self.value / self.baseline


def fmt_time(seconds: float) -> str:
    """``seconds`` with three significant digits in ns, µs, ms or s."""
    for scale, unit in ((1e-6, "ns"), (1e-3, "µs"), (1.0, "ms")):
        if seconds < scale:
            return f"{seconds / scale * 1e3:.3g} {unit}"
    return f"{seconds:.3g} s"


def fmt_value(value: float, unit: str) -> str:
    return fmt_time(value) if unit == "s" else f"{value:,.0f} {unit}"


def fmt_ratio(ratio: float) -> str:
    if ratio < 0.1:
        return f"1/{1 / ratio:,.0f}x"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def print_table(rows: Iterable[Row]) -> None:
    """An aligned table of figures, baselines and ratios, then one line per target."""
    rows = list(rows)
    header = ("figure", "value", "baseline", "value", "ratio")
    cells = [
        (
            r.what,
            fmt_value(r.value, r.unit),
            r.baseline_name,
            fmt_value(r.baseline, r.unit),
            fmt_ratio(r.ratio),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths), *cells]:
        print(
            "  ".join(
                cell.rjust(w) if i in (1, 3, 4) else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    print()
    for r in rows:
        if r.target is not None:
            verdict = "MET" if r.target.met(r.ratio) else "MISSED"
            print(f"target: {r.target.text} … {fmt_ratio(r.ratio)} {verdict}")


def print_header(title: str, notes: Iterable[str] = ()) -> None:
    """The benchmark's title, the machine, and what the reader needs to know to trust the figures."""
    print(f"== {title} ==")
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    print(f"python {platform.python_version()} on {machine}")
    for note in notes:
        print(f"- {note}")
    print()
