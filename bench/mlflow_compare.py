"""Side by side with MLflow's model registry, each figure against MLflow's fastest fair call.

Runs only where ``mlflow`` is importable; keep it out of the project's venv, and pin it (the figures
in the README were made with 3.17.2; a newer MLflow may differ)::

    python3 -m venv /tmp/mlflow-venv
    /tmp/mlflow-venv/bin/pip install 'mlflow-skinny==3.17.2' sqlalchemy alembic -e .
    /tmp/mlflow-venv/bin/python bench/mlflow_compare.py   # --all: the file store at 5,000 too (slow)

What is timed, for N = 100, 1,000 and 5,000 versions (stores: sqlite, and the file store where
MLflow still has it), each figure naming the MLflow call used:

- every version with its metadata: MLflow ``search_model_versions("name='bench'")`` (tags and
  description included; its only call for this); ours ``[get_metadata(v) for v in list_versions()]``.
  Cold (a fresh process per run, timed inside it from after its imports: opening the store is part
  of it, importing the library is not) and warm (the same client or registry asked again).
- latest by registration: the fastest of an alias lookup (``get_model_version_by_alias``, the alias
  set to the newest version) and ``search_model_versions(order_by=["version_number DESC"],
  max_results=1)``, whichever is faster at that N; ``models:/…/latest`` (``get_latest_versions``,
  deprecated and slower) is not used. Ours: ``get_latest_version(include_prerelease=True)``: by SemVer,
  which here is the registration order.
- latest by SemVer (releases only): MLflow has no such call: ``search_model_versions`` of every
  version, parse each ``semver`` tag, skip prereleases, take the highest. Ours: ``get_latest_version()``.
- ours with ``watch=False`` (no inotify: macOS, NFS, some bind mounts), warm, for the first and
  third figures.

The stores are built once and cached (see ``_common``): the sqlite ones through the MLflow API; the
file store's version folders after the first are written in the layout the API writes, because its
``create_model_version`` re-reads every version (quadratic: hours for 5,000).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import semver
from _common import (
    Row,
    Target,
    cached_dir,
    interleaved,
    print_header,
    print_table,
    saved_registry,
    user_metadata,
    version_name,
)

from flask_model_registry import ModelRegistry

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store is in maintenance mode
NS = (100, 1_000, 5_000)
NAME = "bench"
ALIAS = "newest"
COLD_RUNS = 3
#: The file store re-reads every version's files on each call: about a minute per call at 5,000
#: (measured with mlflow 3.17.2: 83 s cold, 61 s warm), so larger N run only with ``--all``.
FILE_STORE_MAX_N = 1_000
#: Roughly how many seconds the warm rounds of one N may take; slow stores get fewer rounds.
WARM_BUDGET = 8.0


def mlflow_tags(i: int) -> dict[str, str]:
    """Our user metadata as MLflow version tags (strings; JSON for the structured ones)."""
    tags = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in user_metadata(i).items()
        if key != "description"
    }
    return {**tags, "semver": version_name(i)}


def _create_version(client: Any, i: int) -> None:
    description = user_metadata(i)["description"]
    client.create_model_version(
        NAME, f"file:///models/{NAME}/{i + 1}", tags=mlflow_tags(i), description=description
    )


def sqlite_store(n: int) -> str:
    """A cached sqlite store with one registered model of ``n`` versions, built through the API."""
    import mlflow

    def build(folder: Path) -> None:
        folder.mkdir(parents=True)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model(NAME)
        for i in range(n):
            _create_version(client, i)

    return f"sqlite:///{cached_dir(f'mlflow{mlflow.__version__}-semver-sqlite-{n}', build) / 'mlflow.db'}"


def file_store(n: int) -> str:
    """A cached file store: version 1 through the API, the others copied from its layout."""
    import mlflow
    import yaml

    def build(folder: Path) -> None:
        client = mlflow.MlflowClient(tracking_uri=folder.as_uri(), registry_uri=folder.as_uri())
        client.create_registered_model(NAME)
        _create_version(client, 0)
        model_dir = folder / "models" / NAME
        template = yaml.safe_load((model_dir / "version-1" / "meta.yaml").read_text())
        for i in range(1, n):
            version = model_dir / f"version-{i + 1}"
            (version / "tags").mkdir(parents=True)
            source = f"file:///models/{NAME}/{i + 1}"
            meta = {
                **template,
                "version": i + 1,
                "source": source,
                "storage_location": source,
                "description": user_metadata(i)["description"],
                "creation_timestamp": template["creation_timestamp"] + i,
                "last_updated_timestamp": template["creation_timestamp"] + i,
            }
            (version / "meta.yaml").write_text(yaml.safe_dump(meta, default_flow_style=False))
            for key, value in mlflow_tags(i).items():
                (version / "tags" / key).write_text(value)

    return cached_dir(f"mlflow{mlflow.__version__}-semver-file-{n}", build).as_uri()


# the operations -----------------------------------------------------------------------------------


def ours(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Every version's metadata, in order."""
    return [registry.get_metadata(v) for v in registry.list_versions()]


def theirs(client: Any) -> list[Any]:
    """Every version with its tags and description: MLflow's one call for it."""
    return client.search_model_versions(f"name='{NAME}'")


def theirs_by_alias(client: Any) -> str:
    """The newest registered version, through the alias that names it."""
    return client.get_model_version_by_alias(NAME, ALIAS).version


def theirs_by_order(client: Any) -> str:
    """The newest registered version: the highest number, one result."""
    (found,) = client.search_model_versions(f"name='{NAME}'", order_by=["version_number DESC"], max_results=1)
    return found.version


def theirs_by_semver(client: Any) -> str | None:
    """The highest release by SemVer, from each version's ``semver`` tag (no MLflow call does it)."""
    best = None
    for found in client.search_model_versions(f"name='{NAME}'"):
        parsed = semver.Version.parse(found.tags["semver"])
        if parsed.prerelease is None and (best is None or parsed > best):
            best = parsed
    return str(best) if best is not None else None


def open_client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def child(kind: str, location: str) -> None:
    """``--cold``: in this fresh process, time opening the store through to the answer."""
    if kind != "ours":  # everything imported before the clock starts
        import mlflow.store.artifact.utils.models
        import mlflow.store.model_registry.file_store
        import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401

    start = time.perf_counter()
    if kind == "ours":
        ours(ModelRegistry(location))
    else:
        theirs(open_client(location))
    print(json.dumps(time.perf_counter() - start))


def cold(kind: str, location: str) -> float:
    """Seconds one fresh process takes, after its imports, to open the store and answer."""
    command = [sys.executable, __file__, "--cold", kind, location]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    return float(result.stdout.strip().splitlines()[-1])


# the comparison -----------------------------------------------------------------------------------


def stores(n: int, everything: bool) -> dict[str, str]:
    """The MLflow stores to compare with at ``n`` versions (the file store only where it is bounded)."""
    if n > FILE_STORE_MAX_N and not everything:
        return {"sqlite": sqlite_store(n)}
    return {"sqlite": sqlite_store(n), "file": file_store(n)}


def timed_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_cases(cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds of each case, interleaved, within about :data:`WARM_BUDGET` seconds."""
    slowest = max(timed_once(fn) for fn in cases.values())
    rounds = max(1, min(9, int(WARM_BUDGET / (slowest * len(cases)))))
    return interleaved(cases, rounds=rounds, number=max(1, int(0.01 / max(slowest, 1e-6))), warmup=False)


def compare(n: int, mlflow_stores: dict[str, str]) -> list[Row]:
    root = saved_registry(n)
    cold_runs: dict[str, list[float]] = {"ours": [], **{name: [] for name in mlflow_stores}}
    for _ in range(COLD_RUNS):
        cold_runs["ours"].append(cold("ours", str(root)))
        for name, uri in mlflow_stores.items():
            cold_runs[name].append(cold("mlflow", uri))
    colds = {name: statistics.median(runs) for name, runs in cold_runs.items()}

    registry, polled = ModelRegistry(root), ModelRegistry(root, watch=False)
    newest, newest_release = version_name(n - 1), registry.get_latest_version()
    assert len(ours(registry)) == n and registry.get_latest_version(include_prerelease=True) == newest
    rows = []
    for name, uri in mlflow_stores.items():
        client = open_client(uri)
        client.set_registered_model_alias(NAME, ALIAS, str(n))
        assert len(theirs(client)) == n and theirs_by_semver(client) == newest_release, name
        lists = warm_cases(
            {
                "mlflow": lambda c=client: theirs(c),
                "ours": lambda: ours(registry),
                "polled": lambda: ours(polled),
            }
        )
        by_registration = {}
        for call, fn in (("alias lookup", theirs_by_alias), ("order_by + max_results=1", theirs_by_order)):
            try:
                assert str(fn(client)) == str(n)
            except Exception as exc:  # a store without that call
                print(f"(MLflow {name}: {call} unavailable: {type(exc).__name__})")
                continue
            by_registration[call] = lambda c=client, fn=fn: fn(c)
        registered = warm_cases(
            {**by_registration, "ours": lambda: registry.get_latest_version(include_prerelease=True)}
        )
        fastest = min(by_registration, key=registered.__getitem__)
        by_semver = warm_cases(
            {
                "mlflow": lambda c=client: theirs_by_semver(c),
                "ours": registry.get_latest_version,
                "polled": polled.get_latest_version,
            }
        )
        cold_target = Target(f"N={n:,}, {name}: ours ≥2x faster cold", 2.0, higher_is_better=True)
        warm_target = Target(f"N={n:,}, {name}: ours ≥10x faster warm", 10.0, higher_is_better=True)
        rows += [
            Row(
                f"N={n:,} {name} cold, every version: search_model_versions",
                colds[name],
                "ours",
                colds["ours"],
                cold_target,
            ),
            Row(
                f"N={n:,} {name} warm, every version: search_model_versions",
                lists["mlflow"],
                "ours",
                lists["ours"],
                warm_target,
            ),
            Row(
                f"N={n:,} {name} warm, every version: search_model_versions",
                lists["mlflow"],
                "ours, watch=False",
                lists["polled"],
            ),
            Row(
                f"N={n:,} {name} warm, latest registered: {fastest}",
                registered[fastest],
                "ours",
                registered["ours"],
            ),
            Row(
                f"N={n:,} {name} warm, latest by SemVer: search + parse tags",
                by_semver["mlflow"],
                "ours",
                by_semver["ours"],
            ),
            Row(
                f"N={n:,} {name} warm, latest by SemVer: search + parse tags",
                by_semver["mlflow"],
                "ours, watch=False",
                by_semver["polled"],
            ),
        ]
    return rows


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--cold":
        child(sys.argv[2], sys.argv[3])
        return
    try:
        import mlflow
    except ImportError:
        print(__doc__.split("What is timed")[0].strip())
        print("\nmlflow is not importable by this Python: nothing to compare; install it as above.")
        return
    everything = "--all" in sys.argv[1:]
    started = time.perf_counter()
    built = {n: stores(n, everything) for n in NS}
    setup = time.perf_counter() - started
    print_header(
        f"MLflow {mlflow.__version__} model registry vs ours, N = {', '.join(f'{n:,}' for n in NS)}",
        [
            "each row: MLflow's call (named) vs ours on local disk; ratio = MLflow / ours (>1: ours faster)",
            "every version: search_model_versions vs [get_metadata(v) for v in list_versions()]",
            "latest registered: MLflow's faster of alias lookup / order_by max_results=1 vs"
            " get_latest_version(include_prerelease=True); latest by SemVer: get_latest_version()",
            f"cold: a fresh process per run (median of {COLD_RUNS}), timed inside it after the imports;"
            " nothing dropped from the OS page cache",
            f"warm: the same client / registry asked again (median of up to 9 rounds, ~{WARM_BUDGET:.0f} s"
            " per N)",
            f"stores ready in {setup:.1f} s (cached under the temp dir; built once)",
            f"the file store runs for N ≤ {FILE_STORE_MAX_N:,} (a call takes about a minute at 5,000);"
            " --all runs it at every N"
            if not everything
            else "the file store runs at every N (--all)",
        ],
    )
    print_table(row for n in NS for row in compare(n, built[n]))


if __name__ == "__main__":
    main()
