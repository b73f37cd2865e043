"""Canary routing: a warm ``route()`` against a warm ``get_latest()`` of the same stage, and the split.

The registry holds 2,000 versions (the discovery benchmark's) plus a stable version in stage
``bench`` and a 10% canary above it. Warm = the same instance asked again with nothing changed.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from _common import Row, Target, interleaved, print_header, print_table, saved_registry

from example_app.model import LinearModel
from flask_model_registry import ModelRegistry
from flask_model_registry.metrics import observe

N = 2_000
KEYS = [f"user-{n}" for n in range(20_000)]


def rollout_registry(workdir: Path) -> Path:
    """A copy of the cached 2,000-version registry, plus 9.0.0 (stage bench) and a 9.1.0 canary."""
    root = workdir / "registry"
    shutil.copytree(saved_registry(N), root, symlinks=True)
    registry = ModelRegistry(root)
    registry.save_model("9.0.0", LinearModel((1.0, 1.0, 1.0)), {"stage": "bench"})
    registry.save_model("9.1.0", LinearModel((2.0, 1.0, 1.0)), {"stage": "staging", "canary": 0.1})
    return root


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        root = rollout_registry(Path(workdir))
        print_header(
            f"route(): {N:,} versions + a 10% canary on local disk (median of 15 interleaved rounds)",
            [
                "warm = the same instance asked again with nothing changed (inotify on); a key seen"
                " before is answered from the decision's memo, a new key costs a blake2b",
                "get_latest('bench') = the stable version alone: what a service without canaries calls",
                "with metrics = the Prometheus observer subscribed (routed_total, served_info), one process",
            ],
        )
        registry = ModelRegistry(root)
        observed = ModelRegistry(root)
        observe(observed)
        for r in (registry, observed):
            r.get_latest("bench")
            r.route("warm-up", "bench")
        fresh = (f"new-{n}" for n in itertools.count())  # more keys than a decision remembers
        micro = interleaved(
            {
                "latest": lambda: registry.get_latest("bench"),
                "key": lambda: registry.route("user-42", "bench"),
                "random": lambda: registry.route(None, "bench"),
                "new key": lambda: registry.route(next(fresh), "bench"),
                "metrics": lambda: observed.route("user-42", "bench"),
            },
            rounds=15,
            number=20_000,
        )
        split = Counter(registry.route(key, "bench").version for key in KEYS)
        sticky = all(
            registry.route(key, "bench").version == ModelRegistry(root).route(key, "bench").version
            for key in KEYS[:200]
        )
    print_table(
        [
            Row(
                "warm route(key, 'bench')",
                micro["key"],
                "warm get_latest('bench')",
                micro["latest"],
                Target("warm route() within 1.5x of a warm get_latest()", 1.5),
            ),
            Row(
                "warm route(None, 'bench'), random",
                micro["random"],
                "warm get_latest('bench')",
                micro["latest"],
            ),
            Row(
                "warm route(), a new key each call",
                micro["new key"],
                "warm get_latest('bench')",
                micro["latest"],
            ),
            Row(
                "warm route(key), with metrics", micro["metrics"], "warm get_latest('bench')", micro["latest"]
            ),
        ]
    )
    share = split["9.1.0"] / len(KEYS)
    print(f"\nsplit over {len(KEYS):,} keys: {dict(split)} -> canary share {share:.4f} (weight 0.1)")
    print(f"same version for the same key in a fresh registry instance: {sticky}")


if __name__ == "__main__":
    main()
