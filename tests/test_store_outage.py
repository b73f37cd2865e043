"""A store that stops answering: a running service keeps serving what it had, and says why."""

from __future__ import annotations

import logging

import pytest
import servers

from flask_model_registry import ModelRegistry, StorageUnavailableError

#: Fail fast once the server is gone, instead of botocore's retries with back-off.
FAIL_FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 2}}


def test_a_store_outage_keeps_the_last_state_and_model(caplog: pytest.LogCaptureFixture):
    with servers.moto_s3() as store:  # a server of its own, to stop in the middle of the test
        options = {**store.storage_options, **FAIL_FAST}
        service = ModelRegistry(store.url("outage"), storage_options=options, refresh_interval=0)
        service.save_model("1.0.0", "the model", {"stage": "prod"})
        assert service.get_latest_model("prod") == "the model"
        newcomer = ModelRegistry(store.url("outage"), storage_options=options, refresh_interval=0)

    with caplog.at_level(logging.WARNING):
        assert service.list_versions() == ["1.0.0"]
        assert service.get_latest_model("prod") == "the model"
        assert service.get_metadata("1.0.0")["stage"] == "prod"
    assert "refresh failed, serving the last state" in caplog.text
    assert "is the store reachable?" in caplog.text

    with pytest.raises(StorageUnavailableError) as caught:  # nothing seen yet: nothing to serve
        newcomer.list_versions()
    assert isinstance(caught.value, OSError)
    assert "moto-secret" not in str(caught.value)
