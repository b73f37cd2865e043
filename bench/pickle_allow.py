"""The pickle allow-list's cost: a load that scans the opcodes first against the same load without.

Both read the artefact once, hash it and unpickle it (the registry's load on local disk); with the
list, the opcodes are scanned between the hash and the unpickling. Three 64 MiB artefacts: large
buffers (numpy arrays, tensors and tree ensembles pickle as a few big byte strings), a model of
millions of Python floats, and a vocabulary of millions of short strings (the scan's worst case:
every opcode is read by Python while the C unpickler takes a few dozen nanoseconds each).

The second table is the choice of scanner: ours (``pickletools``' opcode table, a stack and memo
simulation) against fickling 0.1 (``Pickled.load(data).properties.imports``, its symbolic
interpreter) on the same bytes, and whether each found the pickle's one import.

Run: ``python bench/pickle_allow.py`` (about two minutes; needs ``pip install fickling`` for the
second table, about 1 GiB of memory at the peak).
"""

from __future__ import annotations

import ast
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
from _common import MIB, Row, Target, interleaved, print_header, print_table

from example_app.model import LinearModel
from flask_model_registry import ModelRegistry, loading
from flask_model_registry.pickle_allow import PickleAllowList

TARGET = Target("<= 1.2x", 1.2)
ALLOW = PickleAllowList(["example_app.model"])


def arrays(mib: int) -> Any:
    """``mib`` distinct 1 MiB byte blocks, as the exact-bytes benchmark builds its artefact."""
    block = os.urandom(MIB)
    return [n.to_bytes(8, "little") + block[8:] for n in range(mib)]


def floats(mib: int) -> Any:
    """The example's linear model with ``mib`` MiB of weights (9 bytes each pickled)."""
    return LinearModel(tuple(float(n) for n in range(mib * MIB // 9)))


def vocabulary(mib: int) -> Any:
    """A token → id dict of about ``mib`` MiB pickled, as a text model carries."""
    return {f"token{n}": n for n in range(mib * MIB // 21)}


SHAPES: dict[str, tuple[Callable[[int], Any], int, Target | None]] = {
    "large buffers": (arrays, 7, TARGET),
    "Python floats": (floats, 5, None),
    "short strings": (vocabulary, 3, None),
}


def loads(registry: ModelRegistry, sha: str, allow: PickleAllowList | None) -> Callable[[], object]:
    """The registry's load of version 1.0.0 (read once, hash, [scan,] unpickle)."""
    return lambda: loading.load_artifact(registry.storage, "1.0.0", "model.pkl", sha, {}, allow)


def load_rows(folder: Path) -> tuple[list[Row], dict[str, bytes]]:
    """The load with the list against without, per shape; and each artefact's bytes."""
    rows, artefacts = [], {}
    for label, (build, rounds, target) in SHAPES.items():
        registry = ModelRegistry(folder / label.replace(" ", "-"))
        sha = registry.save_model("1.0.0", build(64))["artifact"]["sha256"]
        gc.collect()
        artefacts[label] = Path(registry.root, "versions/1.0.0/model.pkl").read_bytes()
        times = interleaved(
            {"with": loads(registry, sha, ALLOW), "without": loads(registry, sha, None)}, rounds=rounds
        )
        size = len(artefacts[label]) // MIB
        rows.append(
            Row(f"load {size} MiB of {label}, list on", times["with"], "list off", times["without"], target)
        )
    return rows, artefacts


def fickling_imports(data: bytes) -> list[str]:
    """The imports fickling finds in ``data``."""
    from fickling.fickle import Pickled

    return [ast.unparse(node) for node in Pickled.load(data).properties.imports]


def ours(data: bytes) -> list[str]:
    return [f"from {g.module} import {g.name}" for g in ALLOW.check("1.0.0", data)]


def timed(fn: Callable[[bytes], list[str]], data: bytes) -> tuple[float, list[str]]:
    started = time.perf_counter()
    found = fn(data)
    return time.perf_counter() - started, found


def scanner_rows(artefacts: dict[str, bytes]) -> list[Row]:
    """fickling against our scan, on the large buffers whole and on 4 MiB of each other shape."""
    try:
        import fickling  # noqa: F401
    except ImportError:
        print("fickling is not installed: pip install fickling for the scanner comparison\n")
        return []
    rows = []
    samples = {"large buffers": artefacts["large buffers"]}
    samples |= {
        label: cloudpickle.dumps(build(4))
        for label, (build, _, _) in SHAPES.items()
        if label != "large buffers"
    }
    for label, data in samples.items():
        mine, found_mine = timed(ours, data)
        theirs, found_theirs = timed(fickling_imports, data)
        print(f"{label}: ours found {found_mine or 'no import'}, fickling {found_theirs or 'no import'}")
        rows.append(Row(f"fickling, {len(data) // MIB} MiB of {label}", theirs, "ours", mine))
    print()
    return rows


def main() -> None:
    print_header(
        "pickle allow-list: scan + load against load (local disk)",
        [
            "both: one read into memory, sha256, cloudpickle.loads of those bytes; the list adds the",
            "opcode scan between the hash and the load (and the same rule in find_class)",
            "files are in the page cache (a warm-up load first); medians of interleaved rounds",
            "the target (<= 1.2x) is the issue's, for an artefact of large buffers as models are",
        ],
    )
    folder = Path(tempfile.mkdtemp(prefix="pickle-allow-"))
    try:
        rows, artefacts = load_rows(folder)
        print_table(rows)
        print()
        print_table(scanner_rows(artefacts))
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
