"""Exact-bytes artefact load on local disk against hash + ``cloudpickle.load`` of the open file.

The baseline is what the registry did before: hash the open file, ``seek(0)``, unpickle from the
file (two passes over it; a rewrite in place between them ran the new bytes). The registry now
reads the artefact once into memory, hashes it there and unpickles those very bytes.

Run: ``python bench/exact_bytes_load.py`` (about a minute; writes 1 GiB to a temporary folder,
removed at the end, and needs about 3 GiB of memory at the peak).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

import cloudpickle
from _common import MIB, Row, Target, interleaved, print_header, print_table

from flask_model_registry import ModelRegistry, loading

SIZES = {"64 MiB": (64, 7), "1 GiB": (1024, 3)}  # artefact size in MiB, rounds
TARGET = Target("<= 1.2x", 1.2)


def build(root: Path, mib: int) -> tuple[ModelRegistry, str, str]:
    """A version whose model is ``mib`` distinct 1 MiB blocks; the registry, artefact path, sha256."""
    block = os.urandom(MIB)
    model = [n.to_bytes(8, "little") + block[8:] for n in range(mib)]
    registry = ModelRegistry(root)
    metadata = registry.save_model("1.0.0", model)
    del model
    gc.collect()
    return registry, str(root / "versions" / "1.0.0" / "model.pkl"), metadata["artifact"]["sha256"]


def main() -> None:
    print_header(
        "exact-bytes artefact load (local disk)",
        [
            "baseline: sha256 of the open file, seek(0), cloudpickle.load(file): two passes",
            "registry: one read into memory, sha256 of it, cloudpickle.loads of those very bytes",
            "files are in the page cache (a warm-up load first); medians of interleaved rounds",
            "memory: the registry path holds the artefact's bytes beside the model while loading",
        ],
    )
    rows = []
    for label, (mib, rounds) in SIZES.items():
        folder = Path(tempfile.mkdtemp(prefix="exact-bytes-"))
        try:
            registry, path, sha = build(folder / "registry", mib)

            def baseline(path: str = path, sha: str = sha) -> object:
                with open(path, "rb") as f:
                    loading.check_sha256("1.0.0", loading.hash_file(f), sha)
                    f.seek(0)
                    return cloudpickle.load(f)

            def exact(registry: ModelRegistry = registry, sha: str = sha) -> object:
                return loading.load_artifact(registry.storage, "1.0.0", "model.pkl", sha, {})

            times = interleaved({"baseline": baseline, "exact": exact}, rounds=rounds)
            rows.append(Row(f"load {label}", times["exact"], "hash+load", times["baseline"], TARGET))
        finally:
            shutil.rmtree(folder)
            gc.collect()
    print_table(rows)


if __name__ == "__main__":
    main()
