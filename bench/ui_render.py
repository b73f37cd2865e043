"""The console's pages in-process (Flask test client) over 2,000 versions, next to the JSON API's
``GET /models`` of the same registry.

Run: ``python bench/ui_render.py`` (about 30 seconds; the first run builds the registry). The
registry page must stay under 100 ms warm at this size: it shows 100 versions a page, and what it
derives from all of them (metric columns, stages, latest per stage) is computed once per registry
state.
"""

from __future__ import annotations

import time

from _common import Row, Target, interleaved, print_header, print_table, saved_registry

from example_app import create_app

N = 2_000
BUDGET = 0.100  # seconds: the bound for the registry page, warm


def main() -> None:
    root = saved_registry(N)
    app = create_app({"MODEL_REGISTRY_ROOT": str(root), "TESTING": True})
    client = app.test_client()
    newest = app.registry.list_versions()[-1]  # type: ignore[attr-defined]
    pages = {
        "registry": "/models/ui/",
        "registry, stage=prod": "/models/ui/?stage=prod",
        "registry, page 10": "/models/ui/?page=10",
        "version": f"/models/ui/v/{newest}",
        "diff": "/models/ui/diff",
        "audit": "/models/ui/audit",
        "GET /models": "/models",
    }
    started = time.perf_counter()
    client.get("/models/ui/")  # a fresh app's first request: cold listing, templates compiled
    first = time.perf_counter() - started
    for path in pages.values():
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
    times = interleaved(
        {name: (lambda path=path: client.get(path)) for name, path in pages.items()}, rounds=11, number=5
    )
    json_list = times["GET /models"]
    print_header(
        f"Console pages in-process: Flask test client, {N:,} versions (median of interleaved rounds)",
        [
            "warm = the app has answered before and nothing changed since (inotify)",
            "baseline = GET /models of the same registry: every version's metadata as JSON",
            f"a fresh app's first registry page (cold listing, templates compiled): {first * 1e3:.1f} ms",
            "the audit page reads one page of the trail: history(limit=51), whatever the trail's length",
        ],
    )
    target = Target(
        f"registry page ≤ {BUDGET * 1e3:.0f} ms warm (as a ratio to the JSON list)", BUDGET / json_list
    )
    print_table(
        [
            Row(
                "warm registry page (100 of 2,000 rows)", times["registry"], "GET /models", json_list, target
            ),
            *(
                Row(f"warm {name} page", times[name], "GET /models", json_list)
                for name in ("registry, stage=prod", "registry, page 10", "version", "diff", "audit")
            ),
        ]
    )
    print(f"registry page: {times['registry'] * 1e3:.1f} ms warm; budget {BUDGET * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
