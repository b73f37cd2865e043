"""Schemathesis drives the real app from its own OpenAPI document: no 5xx, every answer as documented.

For each operation it sends the document's examples, its coverage cases (boundary and invalid
values, missing parameters, undeclared methods, wrong content types) and ``max_examples`` generated
requests, valid and invalid, and checks every answer against the document: status codes, headers,
content types and bodies, that valid data is accepted and invalid data refused with a 4xx.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings


class AppUnderTest:
    """The WSGI app schemathesis calls: it forwards each request to the running test's ``app``.

    ``schema.parametrize()`` binds the schema to an app when the tests are collected, before any
    fixture exists (and ``schemathesis.pytest.from_fixture`` does not work under pytest 9).
    """

    app: Flask | None = None

    def __call__(self, environ, start_response):
        assert self.app is not None, "the app_under_test fixture sets the app"
        return self.app(environ, start_response)


APP = AppUnderTest()
# The packaged document is the one served at the default prefix (see test_openapi.py).
schema = schemathesis.openapi.from_dict(
    json.loads(resources.files("flask_model_registry").joinpath("openapi.json").read_bytes())
)
schema.app = APP
# A valid but stale ETag in If-Match is refused with 412 by design (RFC 9110): not a rejection of
# valid data.
_acceptance = schema.config.checks.positive_data_acceptance
_acceptance.expected_statuses = [*_acceptance.expected_statuses, "412"]


@pytest.fixture(autouse=True)
def app_under_test(app, published, monkeypatch):
    """The real app, over a registry with 1.0.0, 1.1.0 and 2.0.0-rc.1 published."""
    monkeypatch.setattr(APP, "app", app)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(case, auth_headers):
    case.call_and_validate(headers=auth_headers)
