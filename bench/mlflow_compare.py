"""Side by side with MLflow's model registry: list every version of one model and resolve the latest.

Runs only where ``mlflow`` is importable; keep it out of the project's venv::

    python3 -m venv /tmp/mlflow-venv
    /tmp/mlflow-venv/bin/pip install mlflow-skinny sqlalchemy alembic -e .
    /tmp/mlflow-venv/bin/python bench/mlflow_compare.py   # --all: the file store at 5,000 too (slow)

What is timed, for N = 100, 1,000 and 5,000 versions:

- MLflow, as its users do it: ``MlflowClient.search_model_versions("name='bench'")`` (every version
  with its tags and description), then the version ``models:/bench/latest`` resolves to
  (``get_model_name_and_version``, what ``mlflow.pyfunc.load_model`` calls: ``get_latest_versions``
  and the highest number). Stores: sqlite, and the file store where MLflow still has it.
- Ours: ``[get_metadata(v) for v in list_versions()]`` and ``get_latest_version()``.
- cold: a fresh process per run, timed inside it from after its imports (MLflow's store modules
  included) to the answer: opening the store is part of it, importing the library is not.
- warm: a running service asking again: the same client or registry in this process, repeated.

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

from _common import (
    Row,
    Target,
    cached_dir,
    interleaved,
    print_header,
    print_table,
    saved_registry,
    user_metadata,
)

from flask_model_registry import ModelRegistry

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store is in maintenance mode
NS = (100, 1_000, 5_000)
NAME = "bench"
COLD_RUNS = 3
#: The file store re-reads every version's files on each call: about a minute per call at 5,000
#: (measured with mlflow 3.17.2: 83 s cold, 61 s warm), so larger N run only with ``--all``.
FILE_STORE_MAX_N = 1_000
#: Roughly how many seconds the warm rounds of one N may take; slow stores get fewer rounds.
WARM_BUDGET = 8.0


def mlflow_tags(i: int) -> dict[str, str]:
    """Our user metadata as MLflow version tags (strings; JSON for the structured ones)."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in user_metadata(i).items()
        if key != "description"
    }


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

    return f"sqlite:///{cached_dir(f'mlflow{mlflow.__version__}-sqlite-{n}', build) / 'mlflow.db'}"


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

    return cached_dir(f"mlflow{mlflow.__version__}-file-{n}", build).as_uri()


# the operations -----------------------------------------------------------------------------------


def ours(registry: ModelRegistry) -> tuple[list[dict[str, Any]], str | None]:
    """Every version's metadata, in order, and the latest version."""
    return [registry.get_metadata(v) for v in registry.list_versions()], registry.get_latest_version()


def ours_names(registry: ModelRegistry) -> tuple[list[str], str | None]:
    """The version names only, and the latest version."""
    return registry.list_versions(), registry.get_latest_version()


def theirs(client: Any) -> tuple[list[Any], Any]:
    """What an MLflow user does: search the model's versions, resolve ``models:/NAME/latest``."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    versions = client.search_model_versions(f"name='{NAME}'")
    return versions, get_model_name_and_version(client, f"models:/{NAME}/latest")


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


def compare(n: int, mlflow_stores: dict[str, str]) -> list[Row]:
    root = saved_registry(n)
    cold_runs: dict[str, list[float]] = {"ours": [], **{name: [] for name in mlflow_stores}}
    for _ in range(COLD_RUNS):
        cold_runs["ours"].append(cold("ours", str(root)))
        for name, uri in mlflow_stores.items():
            cold_runs[name].append(cold("mlflow", uri))
    colds = {name: statistics.median(runs) for name, runs in cold_runs.items()}

    registry = ModelRegistry(root)
    clients = {name: open_client(uri) for name, uri in mlflow_stores.items()}
    assert len(ours(registry)[0]) == n
    cases: dict[str, Callable[[], object]] = {"ours": lambda: ours(registry)}
    for name, client in clients.items():
        assert len(theirs(client)[0]) == n, (name, n)
        cases[name] = lambda client=client: theirs(client)
    slowest = max(timed_once(fn) for fn in cases.values())
    rounds = max(1, min(9, int(WARM_BUDGET / slowest)))
    warm = interleaved(cases, rounds=rounds, warmup=False)
    names_only = interleaved({"names": lambda: ours_names(registry)}, rounds=5, number=1_000)["names"]

    rows = []
    for name in mlflow_stores:
        rows.append(
            Row(
                f"N={n:,} cold: MLflow {name}",
                colds[name],
                "ours",
                colds["ours"],
                Target(f"N={n:,}, {name}: ours ≥2x faster cold", 2.0, higher_is_better=True),
            )
        )
        rows.append(
            Row(
                f"N={n:,} warm: MLflow {name}",
                warm[name],
                "ours",
                warm["ours"],
                Target(f"N={n:,}, {name}: ours ≥10x faster warm", 10.0, higher_is_better=True),
            )
        )
    rows.append(Row(f"N={n:,} warm: ours with metadata", warm["ours"], "ours, names only", names_only))
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
            "MLflow: search_model_versions(\"name='bench'\") + resolving models:/bench/latest"
            " (get_model_name_and_version → get_latest_versions)",
            "ours: [get_metadata(v) for v in list_versions()] + get_latest_version(), local disk",
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
