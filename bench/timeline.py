"""What was live when at 20,000 audit events: ``get_latest_version(stage, as_of=)`` and
``timeline(stage)`` against the read they are built on, ``history()`` (the whole registry-wide trail).

The trail: 200 versions published, then promoted to ``prod``, sent back to ``staging`` and so on,
:data:`EVENTS` events in all, written as the registry writes them. Figures are warm (the registry
has answered once): the answer is kept per state of the trail, so what remains is the read that
tells the state. A row for the first answer after the trail changed (one event more) shows the
cost of building it again.

Run: ``python bench/timeline.py`` (a few seconds; the first run also builds the trail).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from _common import Row, Target, cached_dir, interleaved, print_header, print_table

from flask_model_registry import ModelRegistry
from flask_model_registry.audit import LOG, key_of

EVENTS = 20_000
VERSIONS = 200
START_NS = 1_700_000_000_000_000_000
STEP_NS = 60 * 10**9  # one change a minute


def trail_registry() -> Path:
    """A registry of :data:`VERSIONS` versions whose trail holds :data:`EVENTS` stage changes."""

    def build(root: Path) -> None:
        registry = ModelRegistry(root, watch=False)
        for v in range(VERSIONS):
            registry.save_model(f"1.{v}.0", "model", {"stage": "staging"})
        shutil.rmtree(root / "audit")
        log = root / "audit" / LOG
        log.mkdir(parents=True)
        stages = dict.fromkeys(range(VERSIONS), "staging")
        for n in range(EVENTS):
            v = n % VERSIONS if n < VERSIONS else (n * 7919) % VERSIONS
            version = f"1.{v}.0"
            event_id = f"{START_NS + n * STEP_NS:020d}-{secrets.token_hex(6)}"
            if n < VERSIONS:
                action, before, after = "publish", {}, {"version": version, "stage": "staging"}
            else:
                new = "prod" if stages[v] == "staging" else "staging"
                action, before, after = "update_metadata", {"stage": stages[v]}, {"stage": new}
                stages[v] = new
            event = {
                "id": event_id,
                "time": datetime.fromtimestamp((START_NS + n * STEP_NS) / 1e9, timezone.utc).isoformat(),
                "action": action,
                "version": version,
                "actor": "bench@host",
                "before": before,
                "after": after,
                "_chain": {"before": None, "after": None},
            }
            folder = root / "audit" / version
            folder.mkdir(exist_ok=True)
            path = folder / f"{key_of(event_id)}.json"
            path.write_text(json.dumps(event, separators=(",", ":")))
            os.link(path, log / path.name)

    return cached_dir(f"timeline-{EVENTS}", build)


def main() -> None:
    source = trail_registry()
    print_header(
        f"what was live when, {EVENTS:,} audit events over {VERSIONS} versions",
        ["baseline: history(), the whole registry-wide trail read (what the answers are built on), warm"],
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch, "registry")
        shutil.copytree(source, root)
        registry = ModelRegistry(root)
        middle = datetime.fromtimestamp((START_NS + EVENTS // 2 * STEP_NS) / 1e9, timezone.utc)
        assert registry.get_latest_version("prod", as_of=middle) is not None
        periods = registry.timeline("prod")
        rebuilt = {"n": 0}

        def after_a_change() -> None:
            rebuilt["n"] += 1
            registry.set_stage("1.0.0", "prod" if rebuilt["n"] % 2 else "staging", actor="bench")
            registry.timeline("prod")

        def change_alone() -> None:
            rebuilt["n"] += 1
            registry.set_stage("1.0.0", "prod" if rebuilt["n"] % 2 else "staging", actor="bench")
            registry.history()

        cases = {
            "baseline": registry.history,
            "as_of": lambda: registry.get_latest_version("prod", as_of=middle),
            "timeline": lambda: registry.timeline("prod"),
            "rebuilt": after_a_change,
            "change": change_alone,
        }
        times = interleaved(cases, rounds=7)
    base = times["baseline"]
    target = Target("at most 2x the history read, warm", 2.0)
    print_table(
        [
            Row("get_latest_version('prod', as_of=…)", times["as_of"], "history()", base, target),
            Row(f"timeline('prod') ({len(periods):,} periods)", times["timeline"], "history()", base, target),
            Row(
                "a change, then timeline('prod') (built again)",
                times["rebuilt"],
                "a change, then history()",
                times["change"],
            ),
        ]
    )


if __name__ == "__main__":
    main()
