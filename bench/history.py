"""History of a version with 20,000 audit events: a page of it against reading the whole trail.

The baseline is what ``history()`` did before it was paged: list the version's event files, read and
parse every one, sort. The figures are a page of 50 (``history(v, limit=50)``, the UI's and the
API's usual question) from a fresh registry (cold: the folder listed and sorted again), the same
page again (warm: the listing and the immutable events cached), the next page back (``before=``),
the registry-wide trail's newest page, and ``GET /models/<v>/history?limit=50`` answered ``304``.

Run: ``python bench/history.py`` (a few seconds; the first run also builds the trail).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from _common import Row, Target, cached_dir, interleaved, print_header, print_table
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry
from flask_model_registry.audit import LOG, key_of

EVENTS = 20_000
PAGE = 50
VERSION = "1.0.0"


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


if __name__ == "__main__":
    main()
