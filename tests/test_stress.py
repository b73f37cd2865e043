"""Real gunicorn (the Dockerfile's command, 2 workers) on 127.0.0.1 while a process publishes a version
every 100 ms and promotes some: short runs of ``bench/stress.py`` (see there what is checked).

Clients hammer ``/models/latest``: threads that check each answer (200 JSON, a version that was
published, never older than one published before the request nor than the previous answer), and
``wrk``, whose answers are counted by status and by version. Both workers' memory must stay flat.
What is asserted holds over whatever count of requests a busy machine reaches: no floor on
throughput or on the publisher's pace (``python bench/stress.py`` prints requests/s).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench import stress
from example_app import create_app
from flask_model_registry import ModelRegistry


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is missing: `make test` installs it with apt-get when run as root")
        pytest.skip("wrk (Debian package) is not installed; CI installs it")


def check(result: stress.StressResult) -> None:
    print(f"\n{result.report()}")
    assert result.server_errors == 0, result.statuses
    assert result.wrong == [], "\n".join(result.wrong[:10])
    assert result.rss_growth_mib < stress.RSS_GROWTH_LIMIT_MIB, (result.rss_start, result.rss_end)
    assert result.promoted, "nothing was promoted while the clients ran"


def test_two_workers_answer_only_published_versions_and_never_go_back() -> None:
    result = stress.run_stress(4, use_wrk=False, checkers=4)
    check(result)
    assert result.checked > 0, "no answer was checked"


def test_wrk_against_two_workers_while_publishing_no_5xx_no_wrong_answer_flat_memory() -> None:
    require_wrk()
    result = stress.run_stress(5, checkers=1)
    check(result)
    assert result.wrk is not None and result.wrk.requests > 0, "wrk sent nothing"
    assert sum(result.wrk.versions.values()) == result.wrk.statuses[200], "each 200 names one version"


def test_predict_names_the_version_whose_model_predicted(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    ModelRegistry(root).save_model(stress.version_of(0), stress.model_of(0))
    client = create_app({"MODEL_REGISTRY_ROOT": str(root), "MODEL_STAGE": "", "TESTING": True}).test_client()
    mislabelled, answers = [], 0
    with stress.publisher(root, tmp_path / "log", seconds=2, every=0) as publishing:
        while publishing.poll() is None:
            answer = client.post("/predict", json={"instances": [stress.FEATURES]}).get_json()
            answers += 1
            if answer["predictions"] != stress.predicted_by(answer["version"]):
                mislabelled.append(answer)
    assert answers > 100
    assert mislabelled == [], f"{len(mislabelled)} of {answers} answers, e.g. {mislabelled[:3]}"
