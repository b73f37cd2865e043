"""History of a version with 20,000 audit events: a page of it against reading the whole trail.

The baseline is what ``history()`` did before it was paged: list the version's event files, read and
parse every one, sort. The figures are a page of 50 (``history(v, limit=50)``, the UI's and the
API's usual question) from a fresh registry (cold: the folder listed and sorted again), the same
page again (warm: the listing and the immutable events cached), the next page back (``before=``),
the registry-wide trail's newest page, and ``GET /models/<v>/history?limit=50`` answered ``304``.

A second table: a writer killed after both final copies of its event, before removing its pending
file, and :data:`WRITES` writes of the same version since. Before the next reader settled such a
file, every history page and every write paid for it (the version's events since the pending one
read again); now the first read or write after the kill settles it (removes the file). Figures:
the first page after the kill, the page after that, and a write after the kill, each against the
same with nothing left over; and the first page of a fresh registry (a new worker, a CLI run).

Run: ``python bench/history.py`` (a few seconds; the first run also builds the trails).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import Row, Target, cached_dir, interleaved, print_header, print_table
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry
from flask_model_registry.audit import LOG, PENDING, key_of

EVENTS = 20_000
PAGE = 50
VERSION = "1.0.0"
#: Writes of the version after the writer killed before removing its pending file.
WRITES = 800
ROUNDS = 15


def trail_registry() -> Path:
    """A registry whose version 1.0.0 has :data:`EVENTS` events, written as the registry writes them."""

    def build(root: Path) -> None:
        ModelRegistry(root, watch=False).save_model(VERSION, "model", {"stage": "stage-0"})
        shutil.rmtree(root / "audit")
        folder, log = root / "audit" / VERSION, root / "audit" / LOG
        folder.mkdir(parents=True)
        log.mkdir()
        for n in range(EVENTS):
            event_id = f"{1_700_000_000_000_000_000 + n * 1000:020d}-{secrets.token_hex(6)}"
            event = {
                "id": event_id,
                "time": "2026-01-01T00:00:00.000Z",
                "action": "set_stage",
                "version": VERSION,
                "actor": "bench@host",
                "before": {"stage": f"stage-{n}"},
                "after": {"stage": f"stage-{n + 1}"},
                "_chain": {"before": None, "after": None},
            }
            path = folder / f"{key_of(event_id)}.json"
            path.write_text(json.dumps(event, separators=(",", ":")))
            os.link(path, log / path.name)

    return cached_dir(f"history-{EVENTS}", build)


def read_every_event(root: Path) -> list[dict]:
    """The baseline: every event file of the version read, parsed and sorted."""
    folder = root / "audit" / VERSION
    events = []
    for name in sorted(os.listdir(folder)):
        with open(folder / name, "rb") as f:
            events.append(json.loads(f.read()))
    return sorted(events, key=lambda e: e["id"])


def main() -> None:
    root = trail_registry()
    print_header(
        f"history of a version with {EVENTS:,} audit events, pages of {PAGE}",
        ["baseline: read and parse every event file of the version (the unpaged history)"],
    )
    warm = ModelRegistry(root)
    newest = warm.history(VERSION, limit=PAGE)
    expected = [{k: v for k, v in e.items() if k != "_chain"} for e in read_every_event(root)[-PAGE:]]
    assert newest == expected, "a page is not the newest events"
    app = Flask("bench")
    app.config["MODEL_REGISTRY_ROOT"] = str(root)
    FlaskModelRegistry(app)
    client = app.test_client()
    url = f"/models/{VERSION}/history?limit={PAGE}"
    etag = client.get(url).headers["ETag"]

    def not_modified() -> None:
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304

    cases = {
        "baseline": lambda: read_every_event(root),
        "cold": lambda: ModelRegistry(root, watch=False).history(VERSION, limit=PAGE),
        "warm": lambda: warm.history(VERSION, limit=PAGE),
        "next page": lambda: warm.history(VERSION, limit=PAGE, before=newest[0]["id"]),
        "registry-wide": lambda: warm.history(limit=PAGE),
        "304": not_modified,
    }
    times = interleaved(cases, rounds=7)
    base = times["baseline"]
    target = Target("a page costs at most 1/10 of reading the whole trail", 0.1)
    print_table(
        [
            Row(f"history(v, limit={PAGE}), fresh registry", times["cold"], "whole trail", base, target),
            Row(f"history(v, limit={PAGE}), again", times["warm"], "whole trail", base, target),
            Row("the page before it (before=)", times["next page"], "whole trail", base, target),
            Row(f"history(limit={PAGE}), all versions", times["registry-wide"], "whole trail", base, target),
            Row(f"GET …/history?limit={PAGE}, 304", times["304"], "whole trail", base, target),
        ]
    )


def written_trail() -> Path:
    """A registry whose version 1.0.0 was published, then changed ``WRITES + 1`` times."""

    def build(root: Path) -> None:
        registry = ModelRegistry(root, watch=False)
        registry.save_model(VERSION, "model", {"stage": "stage-0"})
        for n in range(WRITES + 1):
            registry.set_stage(VERSION, f"stage-{n + 1}")

    return cached_dir(f"history-written-{WRITES}", build)


def leave_pending(root: Path) -> Path:
    """Put back the pending file of the first change after the publish, as a writer killed after
    both final copies leaves it; returns its path (a copy of the final event, as the writer wrote)."""
    first = sorted(os.listdir(root / "audit" / VERSION))[-2]  # newest first: [-1] is the publish
    event_id = json.loads((root / "audit" / VERSION / first).read_text())["id"]
    pending = root / "audit" / PENDING / f"{event_id}@{VERSION}.json"
    pending.parent.mkdir(exist_ok=True)
    shutil.copyfile(root / "audit" / VERSION / first, pending)
    return pending


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def leftover_figures() -> None:
    """History pages and writes after a dead writer's finished pending file, against none. Pages
    are timed apart from writes: a folder changed within the last second is listed again."""
    with tempfile.TemporaryDirectory() as scratch:
        clean, left = Path(scratch, "clean"), Path(scratch, "left")
        shutil.copytree(written_trail(), clean)
        shutil.copytree(written_trail(), left)
        registries = {root: ModelRegistry(root, watch=False) for root in (clean, left)}
        samples: dict[str, list[float]] = {
            name: [] for name in ("first", "next", "page", "cold", "cold0", "write", "write0")
        }
        for _ in range(ROUNDS):
            leave_pending(left)
            samples["first"].append(timed(lambda: registries[left].history(limit=PAGE)))
            samples["next"].append(timed(lambda: registries[left].history(limit=PAGE)))
            samples["page"].append(timed(lambda: registries[clean].history(limit=PAGE)))
            leave_pending(left)
            samples["cold"].append(timed(lambda: ModelRegistry(left, watch=False).history(limit=PAGE)))
            samples["cold0"].append(timed(lambda: ModelRegistry(clean, watch=False).history(limit=PAGE)))
        for n in range(ROUNDS):
            leave_pending(left)
            samples["write"].append(timed(lambda n=n: registries[left].set_stage(VERSION, f"again-{n}")))
            samples["write0"].append(timed(lambda n=n: registries[clean].set_stage(VERSION, f"again-{n}")))
        settled = not os.listdir(left / "audit" / PENDING)
    median = {name: sorted(values)[len(values) // 2] for name, values in samples.items()}
    print_table(
        [
            Row("first page after the kill", median["first"], "nothing left", median["page"]),
            Row("the page after it", median["next"], "nothing left", median["page"]),
            Row("first page after the kill, fresh registry", median["cold"], "nothing left", median["cold0"]),
            Row("a write after the kill", median["write"], "nothing left", median["write0"]),
        ]
    )
    print(f"pending file {'settled' if settled else 'still there'} after the last write")


if __name__ == "__main__":
    main()
    print()
    print_header(
        f"a writer killed before removing its finished pending file, then {WRITES} writes of the version",
        [
            f"history(limit={PAGE}) and set_stage on a warm registry, and a fresh one's first page;"
            f" medians of {ROUNDS} rounds"
        ],
    )
    leftover_figures()
