"""What approvals cost: ``GET /models/<v>`` (which lists the version's approvals, read from its audit
trail) of a version with a long trail, against ``GET /models/latest`` of the same version (the same
answer without approvals, rendered once per registry state); and a promotion under an ``approvals``
rule against the same promotion with no rule.

The version has :data:`EVENTS` audit events (metadata edits) and three approvals, as a long-lived
prod model would. Warm: the registry has answered before (its caches filled). Run:
``python bench/approvals.py`` (a few seconds; the first run also builds the trail).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from _common import Row, Target, cached_dir, interleaved, print_header, print_table
from flask import Flask

from flask_model_registry import FlaskModelRegistry, ModelRegistry

EVENTS = 2_000
VERSION = "1.0.0"
ROUNDS = 15
TOKEN = "bench"


def long_trail() -> Path:
    """A registry whose 1.0.0 has :data:`EVENTS` events and three approvals for prod."""

    def build(root: Path) -> None:
        registry = ModelRegistry(root, watch=False)
        registry.save_model(VERSION, "model", {"stage": "staging"}, actor="trainer")
        for n in range(EVENTS):
            registry.update_metadata(VERSION, {"step": n}, actor="trainer")
        for reviewer in ("ana", "bo", "cy"):
            registry.approve(VERSION, "prod", actor=reviewer)

    return cached_dir(f"approvals-{EVENTS}", build)


def main() -> None:
    print_header(
        "approvals",
        [f"version {VERSION} with {EVENTS} audit events and 3 approvals, local disk, warm, {ROUNDS} rounds"],
    )
    work = Path(tempfile.mkdtemp())
    try:
        root = work / "registry"
        shutil.copytree(long_trail(), root)
        app = Flask("bench")
        app.config.update(MODEL_REGISTRY_ROOT=str(root), MODEL_REGISTRY_API_TOKEN=TOKEN)
        FlaskModelRegistry(app)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert len(client.get(f"/models/{VERSION}", headers=auth).get_json()["approvals"]) == 3
        reads = interleaved(
            {
                "version": lambda: client.get(f"/models/{VERSION}", headers=auth),
                "latest": lambda: client.get("/models/latest", headers=auth),
            },
            rounds=ROUNDS,
            number=20,
        )
        ruled = ModelRegistry(root, stage_rules={"prod": {"approvals": 2}})
        free = ModelRegistry(root)

        def promote(registry: ModelRegistry) -> None:
            registry.set_stage(VERSION, "prod", actor="dee")
            registry.set_stage(VERSION, "staging", actor="dee")

        writes = interleaved(
            {"ruled": lambda: promote(ruled), "free": lambda: promote(free)}, rounds=ROUNDS, number=2
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(
        [
            Row(
                "GET /models/<v> (with approvals)",
                reads["version"],
                "GET /models/latest",
                reads["latest"],
                Target("at most 3x: approvals read as the trail grows, not the whole trail", 3.0),
            ),
            Row(
                "promote + demote, prod needs 2 approvals",
                writes["ruled"],
                "the same, no rule",
                writes["free"],
                Target("at most 2x: one page of the version's newest events per ruled promotion", 2.0),
            ),
        ]
    )


if __name__ == "__main__":
    main()
