"""Where the time goes: pyinstrument over the cold listing and the warm reads, hot spots as shares.

Run: ``python bench/profile_hotspots.py`` (about 20 seconds; needs ``pip install pyinstrument``). For
each scenario it prints the functions with the most own time (any code: the package, the standard
library, built-ins such as ``posix.stat``) and the package's functions by total time, both as shares
of the profiled time. A sampling profiler still slows down call-heavy code a little: read the shares,
not the absolute times (``discovery.py`` and ``http_api.py`` measure those).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from _common import saved_registry

from example_app import create_app
from flask_model_registry import ModelRegistry

N = 2_000
SECONDS = 4.0
TOP = 10
PACKAGE = "flask_model_registry"


def profile(fn: Callable[[], object], seconds: float) -> tuple[Any, int]:
    """The pyinstrument root frame of calling ``fn`` repeatedly for ``seconds``, and the call count."""
    from pyinstrument import Profiler

    fn()  # a fresh registry's first read scans, and its second rescans once: not steady state
    start = time.perf_counter()
    fn()
    batch = max(1, int(0.01 / (time.perf_counter() - start)))  # few clock reads for fast calls
    profiler = Profiler(interval=0.0001)
    calls = 0
    deadline = time.perf_counter() + seconds
    profiler.start()
    while time.perf_counter() < deadline:
        for _ in range(batch):
            fn()
        calls += batch
    session = profiler.stop()
    return session.root_frame(), calls


def shares(root: Any) -> tuple[Counter[str], Counter[str]]:
    """Own and total (inclusive, recursion counted once) seconds per function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()

    def walk(frame: Any, stack: frozenset[str]) -> None:
        name = f"{frame.function} ({frame.file_path_short})"
        children = [c for c in frame.children if not c.is_synthetic]
        own[name] += frame.time - sum(c.time for c in children)
        if name not in stack:
            total[name] += frame.time
        for child in children:
            walk(child, stack | {name})

    for child in root.children:  # the profiling loop itself is not a hot spot
        walk(child, frozenset())
    return own, total


def report(title: str, fn: Callable[[], object]) -> None:
    root, calls = profile(fn, SECONDS)
    own, total = shares(root)
    profiled = sum(child.time for child in root.children) or 1.0
    print(f"-- {title}: {calls:,} calls, {root.time / calls * 1e6:,.1f} µs per call under the profiler --")
    print("  own time  function (file)")
    for name, seconds in own.most_common(TOP):
        print(f"  {seconds / profiled:7.1%}   {name}")
    print("  total     package function (file)")
    package = Counter({name: s for name, s in total.items() if PACKAGE in name})
    for name, seconds in package.most_common(TOP):
        print(f"  {seconds / profiled:7.1%}   {name}")
    print()


def main() -> None:
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("pyinstrument is not installed: `pip install pyinstrument`, then run this again")
        return
    root = saved_registry(N)
    warm = ModelRegistry(root)
    client = create_app({"MODEL_REGISTRY_ROOT": str(root), "TESTING": True}).test_client()
    print(
        f"== hot spots (pyinstrument, {SECONDS:.0f} s per scenario, {N:,} versions, shares of that time) ==\n"
    )
    report("cold: a fresh ModelRegistry(root).snapshot()", lambda: ModelRegistry(root).snapshot())
    report(
        "cold: a fresh instance, list_versions() + get_metadata() of each",
        lambda: [r.get_metadata(v) for r in [ModelRegistry(root)] for v in r.list_versions()],
    )
    report("warm: get_latest_version()", warm.get_latest_version)
    report("warm: get_latest_model()", warm.get_latest_model)
    report("warm: GET /models/latest (Flask test client)", lambda: client.get("/models/latest"))


if __name__ == "__main__":
    main()
