"""The console's delete through Flask's test client: a confirmation page that says why a version in
use stays, its form (signed in, CSRF, refused when stale), and the version page's link to it. The
browser test (test_ui_browser.py) clicks through one delete in chromium."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from test_ui import SIGNED, UI, hidden, make_app, sign_in

from flask_model_registry import ModelRegistry

__all__ = ["make_app"]  # the fixture, shared with test_ui.py


@pytest.fixture
def spare(published: ModelRegistry) -> ModelRegistry:
    """``published`` plus 0.5.0, which serves nothing."""
    published.save_model("0.5.0", "spare", actor="trainer")
    return published


def test_a_signed_in_delete_goes_through_the_confirmation_page(
    make_app: Callable[..., Flask], spare: ModelRegistry
) -> None:
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    assert f'href="{UI}/v/0.5.0/delete"'.encode() in client.get(f"{UI}/v/0.5.0").data
    page = client.get(f"{UI}/v/0.5.0/delete")
    assert page.status_code == 200 and b"Delete version 0.5.0</button>" in page.data
    form = {"csrf_token": hidden(page.data, "csrf_token"), "etag": hidden(page.data, "etag")}
    answer = client.post(f"{UI}/v/0.5.0/delete", data=form)
    assert answer.status_code == 303 and answer.headers["Location"].endswith(f"{UI}/")
    assert b"Version 0.5.0 deleted" in client.get(f"{UI}/").data
    assert "0.5.0" not in spare.list_versions()
    assert spare.history("0.5.0")[-1]["action"] == "delete" and spare.history("0.5.0")[-1]["actor"] == "alice"


def test_a_version_in_use_says_why_and_has_no_form(
    make_app: Callable[..., Flask], spare: ModelRegistry
) -> None:
    client = make_app(**SIGNED).test_client()
    csrf = sign_in(client)
    page = client.get(f"{UI}/v/1.0.0/delete")
    assert page.status_code == 200 and b"is in use and cannot be deleted" in page.data
    assert b"stage &#39;prod&#39;" in page.data and b"</button>" not in page.data.split(b"<main")[1]
    forced = client.post(f"{UI}/v/1.0.0/delete", data={"csrf_token": csrf, "etag": "x"})
    assert forced.status_code == 409 and b"is in use" in forced.data
    assert "1.0.0" in spare.list_versions()


def test_a_stale_or_forged_form_deletes_nothing(make_app: Callable[..., Flask], spare: ModelRegistry) -> None:
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    page = client.get(f"{UI}/v/0.5.0/delete").data
    form = {"csrf_token": hidden(page, "csrf_token"), "etag": hidden(page, "etag")}
    spare.update_metadata("0.5.0", {"note": "changed behind the page"})
    stale = client.post(f"{UI}/v/0.5.0/delete", data=form)
    assert stale.status_code == 409 and b"changed since this page was shown" in stale.data
    assert client.post(f"{UI}/v/0.5.0/delete", data={"etag": form["etag"]}).status_code == 403
    assert "0.5.0" in spare.list_versions()


def test_read_only_shows_no_form_and_refuses_the_post(
    make_app: Callable[..., Flask], spare: ModelRegistry
) -> None:
    client = make_app().test_client()
    page = client.get(f"{UI}/v/0.5.0/delete")
    assert page.status_code == 200 and b"</button>" not in page.data.split(b"<main")[1]
    assert client.post(f"{UI}/v/0.5.0/delete", data={}).status_code == 403
    assert client.get(f"{UI}/v/9.9.9/delete").status_code == 404
    assert "0.5.0" in spare.list_versions()
