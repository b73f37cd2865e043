"""A store that stops answering: a running service keeps serving what it had, and says why."""

from __future__ import annotations

import logging
import time

import pytest
import servers
from helpers_procs import count_calls

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


def test_during_an_outage_the_store_is_asked_once_per_refresh_interval(caplog: pytest.LogCaptureFixture):
    with servers.moto_s3() as store:
        options = {**store.storage_options, **FAIL_FAST}
        service = ModelRegistry(store.url("outage-interval"), storage_options=options, refresh_interval=0.5)
        service.save_model("1.0.0", "the model")
        assert service.get_latest_model() == "the model"
        newcomer = ModelRegistry(store.url("outage-interval"), storage_options=options, refresh_interval=0.5)
    listings = count_calls(service.storage, "refresh")
    time.sleep(0.6)  # the last good listing is older than the interval: the next call asks

    with caplog.at_level(logging.WARNING):
        for _ in range(50):  # the requests of a busy service, all within one interval
            assert service.get_latest_model() == "the model"
    assert len(listings) == 1, "one failed listing, then the last state until the interval is over"
    assert caplog.text.count("refresh failed") == 1
    time.sleep(0.6)
    assert service.get_latest_model() == "the model"
    assert len(listings) == 2, "asked again once the interval is over"

    for _ in range(2):  # with nothing to serve, every call asks (and fails) rather than answer empty
        with pytest.raises(StorageUnavailableError):
            newcomer.list_versions()
