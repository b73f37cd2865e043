"""The console through Flask's test client: who may read and write, CSRF, stale forms, paging, bad
input. The browser tests (test_ui_browser.py) drive the same pages in chromium."""

from __future__ import annotations

import html as html_text
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "ui-test-token"
SIGNED = {"MODEL_REGISTRY_API_TOKEN": TOKEN, "SECRET_KEY": "ui-test-secret"}
UI = "/models/ui"


def hidden(html: bytes, name: str) -> str:
    match = re.search(rb'name="%s" value="([^"]*)"' % name.encode(), html)
    assert match, f"no hidden field {name}"
    return match.group(1).decode()


def sign_in(client: FlaskClient, name: str = "alice") -> str:
    """Sign in through the form; the session's CSRF token."""
    csrf = hidden(client.get(f"{UI}/sign-in").data, "csrf_token")
    answer = client.post(f"{UI}/sign-in", data={"csrf_token": csrf, "token": TOKEN, "name": name})
    assert answer.status_code == 303, answer.data
    return hidden(client.get(f"{UI}/").data, "csrf_token")


def form_of(client: FlaskClient, version: str) -> dict[str, str]:
    """The hidden fields of the version page's forms (CSRF token and metadata fingerprint)."""
    html = client.get(f"{UI}/v/{version}").data
    return {"csrf_token": hidden(html, "csrf_token"), "etag": hidden(html, "etag")}


@pytest.fixture
def make_app(registry_root: Path, published: ModelRegistry) -> Callable[..., Flask]:
    def make(**config: Any) -> Flask:
        app = Flask("ui_test")
        app.config.update(TESTING=True, MODEL_REGISTRY_ROOT=str(registry_root), **config)
        FlaskModelRegistry(app)
        return app

    return make


def test_disabled_console_is_the_api_json_404(
    make_app: Callable[..., Flask], json_error: Callable[[Any], dict[str, Any]]
) -> None:
    client = make_app(MODEL_REGISTRY_UI_ENABLED=False).test_client()
    for path in (f"{UI}/", f"{UI}/v/1.0.0", f"{UI}/static/console.css"):
        assert json_error(client.get(path))["code"] == 404
    assert client.get("/models/1.0.0").status_code == 200


def test_console_without_the_api_and_under_another_prefix(make_app: Callable[..., Flask]) -> None:
    client = make_app(MODEL_REGISTRY_API_ENABLED=False, MODEL_REGISTRY_URL_PREFIX="/registry/").test_client()
    answer = client.get("/registry/ui/")
    assert answer.status_code == 200 and b"1.1.0" in answer.data
    assert b'href="/registry/ui/static/console.css"' in answer.data
    assert client.get("/registry/1.0.0").status_code == 404


def test_read_only_without_a_token(make_app: Callable[..., Flask], published: ModelRegistry) -> None:
    client = make_app().test_client()
    for path in ("/", "/v/1.1.0", "/diff", "/audit", "/rollback?stage=prod"):
        answer = client.get(UI + path)
        assert answer.status_code in (200, 404) and b"MODEL_REGISTRY_API_TOKEN" in answer.data, path
        assert b'method="post"' not in answer.data
        assert "Set-Cookie" not in answer.headers
    answer = client.post(f"{UI}/v/1.1.0/promote", data={"stage": "prod"})
    assert answer.status_code == 403
    assert published.get_metadata("1.1.0")["stage"] == "staging"


def test_a_token_without_secret_key_shows_nothing_and_says_why(make_app: Callable[..., Flask]) -> None:
    client = make_app(MODEL_REGISTRY_API_TOKEN=TOKEN).test_client()
    for path in ("/", "/v/1.0.0", "/audit", "/sign-in"):
        answer = client.get(UI + path)
        assert answer.status_code == 503 and b"SECRET_KEY" in answer.data, path
        assert b"1.0.0" not in answer.data and b"1.1.0" not in answer.data
    answer = client.post(f"{UI}/sign-in", data={"token": TOKEN, "name": "alice"})
    assert answer.status_code == 503 and "Set-Cookie" not in answer.headers


def test_reading_needs_sign_in_with_a_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(**SIGNED).test_client()
    answer = client.get(f"{UI}/v/1.0.0?x=1")
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{UI}/sign-in?next=/models/ui/v/1.0.0?x%3D1"
    assert b"1.0.0" not in client.get(f"{UI}/audit", follow_redirects=True).data
    assert client.get("/models/1.0.0", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_session_cookie(make_app: Callable[..., Flask]) -> None:
    app = make_app(**SIGNED)
    client = app.test_client()
    csrf = hidden(client.get(f"{UI}/sign-in").data, "csrf_token")
    answer = client.post(f"{UI}/sign-in", data={"csrf_token": csrf, "token": TOKEN, "name": "alice"})
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/models/ui/" in cookie
    assert "Max-Age=28800" in cookie and TOKEN not in cookie
    assert hidden(client.get(f"{UI}/").data, "csrf_token") != csrf  # a new CSRF token once signed in

    app.config["MODEL_REGISTRY_API_TOKEN"] = "rotated"  # a new token signs everybody out
    assert client.get(f"{UI}/").status_code == 303


def test_a_forged_or_foreign_cookie_is_not_a_session(make_app: Callable[..., Flask]) -> None:
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    value = client.get_cookie("model_registry_ui", path="/models/ui/").value
    client.set_cookie("model_registry_ui", value[:-2] + "xx", path="/models/ui/")
    assert client.get(f"{UI}/").status_code == 303
    other = make_app(MODEL_REGISTRY_API_TOKEN=TOKEN, SECRET_KEY="another-key").test_client()
    other.set_cookie("model_registry_ui", value, path="/models/ui/")
    assert other.get(f"{UI}/").status_code == 303


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ({"token": "wrong", "name": "alice"}, 401, b"not the API token"),
        ({"token": TOKEN, "name": ""}, 400, b"Give your name"),
        ({"token": TOKEN, "name": "x" * 65}, 400, b"Give your name"),
        ({"token": TOKEN, "name": "a\nb"}, 400, b"Give your name"),
    ],
)
def test_sign_in_refusals(
    make_app: Callable[..., Flask], form: dict[str, str], status: int, says: bytes
) -> None:
    client = make_app(**SIGNED).test_client()
    csrf = hidden(client.get(f"{UI}/sign-in").data, "csrf_token")
    answer = client.post(f"{UI}/sign-in", data={"csrf_token": csrf, **form})
    assert answer.status_code == status and says in answer.data
    assert client.get(f"{UI}/").status_code == 303


def test_sign_in_needs_its_csrf_token_and_never_redirects_off_site(make_app: Callable[..., Flask]) -> None:
    client = make_app(**SIGNED).test_client()
    client.get(f"{UI}/sign-in")
    answer = client.post(f"{UI}/sign-in", data={"token": TOKEN, "name": "alice"})
    assert answer.status_code == 403
    for target in ("https://evil.example/", "//evil.example/models/ui/", "/elsewhere", "/models/ui\\@evil"):
        csrf = hidden(client.get(f"{UI}/sign-in").data, "csrf_token")
        data = {"csrf_token": csrf, "token": TOKEN, "name": "alice", "next": target}
        answer = client.post(f"{UI}/sign-in", data=data)
        assert answer.headers["Location"] == f"{UI}/", target
        client.post(f"{UI}/sign-out", data={"csrf_token": hidden(client.get(f"{UI}/").data, "csrf_token")})


def test_writes_need_this_sessions_csrf_token(
    make_app: Callable[..., Flask], published: ModelRegistry
) -> None:
    app = make_app(**SIGNED)
    client, other = app.test_client(), app.test_client()
    sign_in(client)
    sign_in(other, "bob")
    fields = form_of(client, "1.1.0")
    for csrf in (None, "", form_of(other, "1.1.0")["csrf_token"]):
        data = {**fields, "stage": "prod"}
        data.pop("csrf_token")
        if csrf is not None:
            data["csrf_token"] = csrf
        answer = client.post(f"{UI}/v/1.1.0/promote", data=data)
        assert answer.status_code == 403 and b"CSRF" in answer.data
    assert client.post(f"{UI}/sign-out").status_code == 403
    assert published.get_metadata("1.1.0")["stage"] == "staging"
    assert client.post(f"{UI}/v/1.1.0/promote", data={**fields, "stage": "prod"}).status_code == 303
    assert published.get_metadata("1.1.0")["stage"] == "prod"
    assert published.history("1.1.0")[-1]["actor"] == "alice"


def test_a_stale_form_changes_nothing(make_app: Callable[..., Flask], published: ModelRegistry) -> None:
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    fields = form_of(client, "1.0.0")
    published.update_metadata("1.0.0", {"owner": "someone"}, actor="elsewhere")
    answer = client.post(f"{UI}/v/1.0.0/set-flag", data={**fields, "flag": "frozen"})
    assert answer.status_code == 409 and b"changed since this page was shown" in answer.data
    assert "frozen" not in published.get_metadata("1.0.0")
    assert published.history("1.0.0")[-1]["actor"] == "elsewhere"


def test_each_change_of_the_version_page(make_app: Callable[..., Flask], published: ModelRegistry) -> None:
    client = make_app(**SIGNED).test_client()
    sign_in(client, "carol")

    def post(op: str, **data: str) -> Any:
        return client.post(f"{UI}/v/1.1.0/{op}", data={**form_of(client, "1.1.0"), **data})

    assert post("set-flag", flag="shadow").status_code == 303
    assert published.get_metadata("1.1.0")["shadow"] is True
    assert post("clear-flag", flag="shadow").status_code == 303
    assert "shadow" not in published.get_metadata("1.1.0")
    assert post("canary", weight="0.2").status_code == 303
    assert published.get_metadata("1.1.0")["canary"] == 0.2
    assert post("demote").status_code == 303
    assert "stage" not in published.get_metadata("1.1.0")
    for op, data in [
        ("canary", {"weight": "1.5"}),
        ("canary", {"weight": "nan"}),
        ("set-flag", {"flag": "version"}),
        ("set-flag", {"flag": "stage"}),
        ("promote", {"stage": "no spaces"}),
    ]:
        answer = post(op, **data)
        assert answer.status_code == 400 and b'role="alert"' in answer.data, (op, data)
    published.update_metadata("1.1.0", {"owner": "ml"})
    assert post("set-flag", flag="owner").status_code == 400
    assert published.get_metadata("1.1.0")["owner"] == "ml"
    assert {e["actor"] for e in published.history("1.1.0")[1:-1]} == {"carol"}


def test_allowed_stages_are_a_select_and_enforced(
    make_app: Callable[..., Flask], published: ModelRegistry
) -> None:
    client = make_app(**SIGNED, MODEL_REGISTRY_STAGES=["staging", "prod"]).test_client()
    sign_in(client)
    html = client.get(f"{UI}/v/1.1.0").data
    assert b'<select id="promote-stage"' in html
    answer = client.post(f"{UI}/v/1.1.0/promote", data={**form_of(client, "1.1.0"), "stage": "pord"})
    assert answer.status_code == 400 and b"unknown stage" in answer.data


def test_rollback_refuses_a_changed_stage(make_app: Callable[..., Flask], published: ModelRegistry) -> None:
    published.set_stage("1.1.0", "prod", actor="alice")
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    page = client.get(f"{UI}/rollback?stage=prod").data
    data = {"csrf_token": hidden(page, "csrf_token"), "stage": "prod", "plan": hidden(page, "plan")}
    published.update_metadata("1.0.0", {"note": "touched"}, actor="elsewhere")
    answer = client.post(f"{UI}/rollback", data=data)
    assert answer.status_code == 409 and b"changed since this page was shown" in answer.data
    assert published.get_latest_version("prod") == "1.1.0"
    data["plan"] = hidden(answer.data, "plan")
    assert client.post(f"{UI}/rollback", data=data).status_code == 303
    assert published.get_latest_version("prod") == "1.0.0"
    assert published.get_metadata("1.1.0")["stage"] == "staging"


def test_a_rollback_that_fails_part_way_is_undone_and_the_page_says_nothing_changed(
    make_app: Callable[..., Flask], published: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    published.set_stage("1.1.0", "prod", actor="alice")
    published.set_stage("1.0.0", "archived", actor="alice")
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    page = client.get(f"{UI}/rollback?stage=prod").data
    data = {"csrf_token": hidden(page, "csrf_token"), "stage": "prod", "plan": hidden(page, "plan")}
    real = ModelRegistry.set_stage

    def then_edited_elsewhere(self: ModelRegistry, version: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        written = real(self, version, *args, **kwargs)
        if version == "1.0.0" and written.get("stage") == "prod":  # the rollback's first change
            published.update_metadata("1.1.0", {"note": "edited"}, actor="elsewhere")
        return written

    monkeypatch.setattr(ModelRegistry, "set_stage", then_edited_elsewhere)
    answer = client.post(f"{UI}/rollback", data=data)
    assert answer.status_code == 409 and b"nothing was changed" in answer.data
    assert published.get_metadata("1.0.0")["stage"] == "archived"  # undone, as the page says
    assert published.get_metadata("1.1.0")["stage"] == "prod"


def test_registry_page_is_paged_newest_first(registry: ModelRegistry, make_app: Callable[..., Flask]) -> None:
    for minor in range(3, 250):
        registry.save_model(f"1.{minor}.0", None, {"stage": "prod" if minor % 2 else "dev"})
    client = make_app().test_client()
    first = client.get(f"{UI}/").data.decode()
    shown = re.findall(r'<th scope="row"><a href="/models/ui/v/([^"]+)"', first)
    assert len(shown) == 100 and shown[:2] == ["2.0.0-rc.1", "1.249.0"] and shown[99] == "1.151.0"
    last = client.get(f"{UI}/?page=3").data.decode()
    assert re.findall(r'<th scope="row"><a href="/models/ui/v/([^"]+)"', last)[-1] == "1.0.0"
    assert 'rel="prev" href="/models/ui/?page=2"' in last
    staged = client.get(f"{UI}/?stage=dev&page=2").data.decode()
    assert re.findall(r'<th scope="row"><a href="/models/ui/v/([^"]+)"', staged)[0] == "1.48.0"
    assert 'href="/models/ui/?page=1&amp;stage=dev"' in staged


def test_metric_columns_broken_versions_and_odd_stages(
    registry: ModelRegistry, by_hand: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    registry.save_model(
        "3.0.0", None, {"metrics": {"auc": 0.9, "ok": True, "curve": [1, 2], "nested": {"a": 1}}}
    )
    by_hand("3.1.0", raw=b"[1, 2]")
    by_hand("3.2.0", {"stage": 7})
    html = make_app().test_client().get(f"{UI}/").data.decode()
    assert re.findall(r'<th scope="col" class="metric">([^<]+)</th>', html) == ["auc", "ok"]
    assert "broken: metadata.json holds a JSON list" in html
    assert 'title="not a string: matches no stage">7</span>' in html
    version = make_app().test_client().get(f"{UI}/v/3.1.0")
    assert version.status_code == 200 and b"This version is broken" in version.data


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v/not-a-version", 400),
        ("/v/9.9.9", 404),
        ("/diff?a=1.0.0&b=..%2F..", 400),
        ("/diff?a=1.0.0&b=9.9.9", 404),
        ("/?stage=no%20spaces", 400),
        ("/?page=0", 400),
        ("/?page=abc", 400),
        ("/audit?version=x", 400),
        ("/?stage=%ff", 400),
        ("/rollback?stage=%00", 400),
    ],
)
def test_bad_input_is_a_clear_html_4xx(make_app: Callable[..., Flask], path: str, status: int) -> None:
    answer = make_app().test_client().get(UI + path)
    assert answer.status_code == status and answer.mimetype == "text/html"
    assert b'role="alert"' in answer.data and b"Traceback" not in answer.data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/", "/audit", "/diff", "/rollback", "/v/1.0.0"]),
    query=st.dictionaries(
        st.sampled_from(["stage", "page", "a", "b", "version", "actor", "before"]), st.text(max_size=30)
    ),
)
def test_no_query_string_makes_a_500(
    make_app: Callable[..., Flask], path: str, query: dict[str, str]
) -> None:
    answer = make_app().test_client().get(UI + path, query_string=query)
    assert answer.status_code < 500, answer.data[:300]


def test_audit_page_filters_and_pages(published: ModelRegistry, make_app: Callable[..., Flask]) -> None:
    for n in range(60):
        published.update_metadata("1.0.0", {"n": n}, actor="bot" if n % 2 else "alice")
    client = make_app().test_client()

    def rows(html: str) -> list[str]:
        return re.findall(r'<td class="actor">([^<]*)</td>', html)

    first = client.get(f"{UI}/audit").data.decode()
    assert len(rows(first)) == 50
    assert first.index('class="after">59<') < first.index('class="after">58<')  # newest first
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).data.decode()
    assert len(rows(second)) == 13 and 'rel="next"' not in second and "← Newest" in second
    assert 'class="after">9<' in second and 'class="after">10<' not in second

    alice, page = [], f"{UI}/audit?actor=ALI"
    while page:
        html = client.get(page).data.decode()
        alice += rows(html)
        found = re.search(r'rel="next" href="([^"]+)"', html)
        page = found.group(1).replace("&amp;", "&") if found else ""
        assert not found or "actor=ALI" in page
    assert alice == ["alice"] * 30
    one = client.get(f"{UI}/audit?version=1.1.0").data.decode()
    assert len(rows(one)) == 1 and "publish" in one
    assert client.get(f"{UI}/audit?before=nonsense").status_code == 400


def test_version_page_shows_the_newest_events_and_links_to_the_rest(
    published: ModelRegistry, make_app: Callable[..., Flask]
) -> None:
    for n in range(55):
        published.update_metadata("1.0.0", {"n": n})
    html = make_app().test_client().get(f"{UI}/v/1.0.0").data.decode()
    assert html.count('<span class="action-name">') == 50 and 'class="after">54<' in html
    assert re.search(r'href="/models/ui/audit\?[^"]*before=\d{20}-[0-9a-f]{12}', html)


def test_security_headers(make_app: Callable[..., Flask]) -> None:
    answer = make_app().test_client().get(f"{UI}/")
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Cache-Control"] == "no-store"


def test_host_error_handlers_do_not_take_over_the_console(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    @app.errorhandler(404)
    def host_404(exc: Exception) -> tuple[str, int]:
        return "host 404", 404

    @app.errorhandler(Exception)
    def host_error(exc: Exception) -> tuple[str, int]:
        return "host error", 500

    client = app.test_client()
    for path in ("/v/9.9.9", "/static/missing.css", "/?page=x"):
        answer = client.get(UI + path)
        assert answer.status_code in (400, 404) and b'role="alert"' in answer.data, path
    assert client.get(UI).headers["Location"] == f"{UI}/"
    assert client.get("/elsewhere").data == b"host 404"


def test_a_page_per_named_model(
    make_app: Callable[..., Flask], tmp_path: Path, published: ModelRegistry
) -> None:
    fraud = ModelRegistry(tmp_path / "fraud")
    fraud.save_model("3.0.0", None, {"stage": "staging", "metrics": {"recall": 0.7}})
    app = make_app(**SIGNED, MODEL_REGISTRY_MODELS={"fraud": str(tmp_path / "fraud")})
    client = app.test_client()
    sign_in(client)
    front = client.get(f"{UI}/").data.decode()
    assert 'href="/models/ui/m/fraud/"' in front and "3.0.0" not in front
    page = client.get(f"{UI}/m/fraud/").data.decode()
    assert "3.0.0" in page and "1.1.0" not in page and ">recall</th>" in page
    assert 'href="/models/ui/m/fraud/v/3.0.0"' in page and 'href="/models/ui/m/fraud/audit"' in page
    html = client.get(f"{UI}/m/fraud/v/3.0.0").data
    fields = {"csrf_token": hidden(html, "csrf_token"), "etag": hidden(html, "etag"), "stage": "prod"}
    answer = client.post(f"{UI}/m/fraud/v/3.0.0/promote", data=fields)
    assert answer.headers["Location"] == f"{UI}/m/fraud/v/3.0.0"
    assert fraud.get_metadata("3.0.0")["stage"] == "prod"
    assert fraud.history("3.0.0")[-1]["actor"] == "alice"
    assert "3.0.0" in client.get(f"{UI}/m/fraud/audit").data.decode()
    missing = client.get(f"{UI}/m/nope/")
    assert missing.status_code == 404 and b"no model named" in missing.data


ODD_METADATA = [
    {"created_at": 5, "artifact": [], "metrics": [], "stage": {"x": 1}},
    {"created_at": "2026-13-45", "artifact": {"size": "big", "sha256": 5}, "canary": "yes"},
    {"created_at": "2020-01-01T00:00:00", "artifact": {"size": -1}, "metrics": {"a": {"b": 1}, "c": None}},
    {"canary": 0.5, "metrics": {"big": 10**30, "neg": -0.0001, "s": "x" * 300}, "stage": ""},
    {"<script>alert(1)</script>": "<img src=x onerror=alert(2)>", "stage": "<b>prod</b>"},
]


def test_odd_hand_made_metadata_never_breaks_a_page_and_is_escaped(
    by_hand: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    for n, metadata in enumerate(ODD_METADATA):
        by_hand(f"5.0.{n}", metadata)
    client = make_app().test_client()
    pages = ["/", "/audit", "/diff?a=5.0.0&b=5.0.4", "/diff?a=5.0.1&b=5.0.3"]
    pages += [f"/v/5.0.{n}" for n in range(len(ODD_METADATA))]
    for path in pages:
        answer = client.get(UI + path)
        assert answer.status_code == 200, (path, answer.data[:300])
        assert b"<script>" not in answer.data and b"<img" not in answer.data and b"<b>prod" not in answer.data
    assert b"&lt;img src=x onerror=alert(2)&gt;" in client.get(f"{UI}/v/5.0.4").data


def test_a_canary_and_a_version_that_fails_to_load_are_shown_as_route_serves_them(
    registry_root: Path, published: ModelRegistry, make_app: Callable[..., Flask]
) -> None:
    published.update_metadata("1.1.0", {"canary": None})
    app = make_app()
    served = app.registry
    assert served.route(stage="prod").version == "1.0.0"
    published.save_model("1.2.0", {"weights": [1.2]}, {"stage": "prod"})
    (registry_root / "versions" / "1.2.0" / "model.pkl").write_bytes(b"rewritten by hand")
    published.save_model("1.3.0", {"weights": [1.3]}, {"stage": "staging", "canary": 0.3})
    typo = {"stage": "staging", "canary": "0.05"}  # not a number: no canary at all
    published.save_model("1.4.0", {"weights": [1.4]}, typo)
    assert served.route(stage="prod").version in ("1.0.0", "1.3.0")  # 1.2.0 fails: 1.0.0 stays
    assert {served.route(f"user-{n}", stage="prod").version for n in range(200)} == {"1.0.0", "1.3.0"}

    html = app.test_client().get(f"{UI}/").data.decode()
    prod = re.search(r'<div class="stage-serving"><dt><a class="[^"]*stage-prod"[^>]*>.*?</div>', html, re.S)
    assert prod, html
    text = " ".join(html_text.unescape(re.sub(r"<[^>]+>", "", prod.group(0))).split())
    assert "1.2.0 stable" in text  # what the registry says serves prod …
    assert "canary 1.3.0 weight 0.3 (30% of traffic)" in text
    assert "1.2.0 failed to load in this process" in text and "sha256" in text
    assert "route() here serves 1.0.0 instead" in text  # … and what this process really serves
    assert '1.4.0 canary "0.05" is invalid: no canary' in text
    assert "1.1.0" not in text

    fresh = make_app().test_client().get(f"{UI}/").data.decode()  # a process that loaded nothing
    assert "failed to load" not in fresh and "this process" in fresh

    version = app.test_client().get(f"{UI}/v/1.3.0").data.decode()
    assert "Canary of stage" in version and "weight 0.3 (30% of traffic)" in version
    assert 'href="/models/ui/v/1.0.0">1.0.0</a>' not in version  # the rest goes to the stable 1.2.0
    broken = app.test_client().get(f"{UI}/v/1.2.0").data.decode()
    assert "Failed to load in this process" in broken


def test_older_holders_of_a_stage_say_they_no_longer_serve_it(
    published: ModelRegistry, make_app: Callable[..., Flask]
) -> None:
    published.set_stage("1.1.0", "prod")
    published.update_metadata("1.1.0", {"canary": None})
    published.save_model("1.2.0", None, {"stage": "prod"})
    published.save_model("1.3.0", None, {"stage": "prod", "canary": 0.2})
    html = make_app().test_client().get(f"{UI}/").data.decode()

    def marks(version: str) -> list[str]:
        row = re.search(rf'<th scope="row"><a href="{UI}/v/{re.escape(version)}">.*?</tr>', html, re.S)[0]
        return re.findall(r'<span class="role [^"]+"[^>]*>([^<]+)</span>', row)

    assert marks("1.3.0") == ["canary"]
    assert marks("1.2.0") == ["serving"]
    assert marks("1.1.0") == ["older"] and marks("1.0.0") == ["older"]
    assert "An older holder of stage" in make_app().test_client().get(f"{UI}/v/1.0.0").data.decode()


def test_promoting_a_canary_in_the_console_ends_its_split_in_one_event(
    published: ModelRegistry, make_app: Callable[..., Flask]
) -> None:
    published.update_metadata("1.1.0", {"canary": 0.3})
    client = make_app(**SIGNED).test_client()
    sign_in(client)
    assert "Promoting ends its canary" in client.get(f"{UI}/v/1.1.0").data.decode()
    assert "Promoting ends its canary" not in client.get(f"{UI}/v/1.0.0").data.decode()
    events = len(published.history("1.1.0"))
    answer = client.post(f"{UI}/v/1.1.0/promote", data={**form_of(client, "1.1.0"), "stage": "prod"})
    assert answer.status_code == 303
    assert "canary" not in published.get_metadata("1.1.0")
    history = published.history("1.1.0")
    assert len(history) == events + 1 and history[-1]["actor"] == "alice"
    assert history[-1]["before"] == {"stage": "staging", "canary": 0.3}
    assert history[-1]["after"] == {"stage": "prod"}
    assert "its canary value 0.3 was removed" in client.get(answer.headers["Location"]).data.decode()
    assert published.route(stage="prod").version == "1.1.0"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.text(max_size=60) | st.sampled_from(["/models/ui/\r\nSet-Cookie: x=1", "/models/ui/v/1.0.0\n"])
)
def test_any_next_signs_in_and_redirects_inside_the_console(
    make_app: Callable[..., Flask], target: str
) -> None:
    client = make_app(**SIGNED).test_client()
    csrf = hidden(client.get(f"{UI}/sign-in", query_string={"next": target}).data, "csrf_token")
    data = {"csrf_token": csrf, "token": TOKEN, "name": "alice", "next": target}
    answer = client.post(f"{UI}/sign-in", data=data)
    assert answer.status_code == 303, answer.data[-300:]
    location = answer.headers["Location"]
    assert location.startswith(f"{UI}/") and not location.startswith("//")
    assert location.isascii() and location.isprintable() and "\\" not in location
    assert "model_registry_ui=" in answer.headers["Set-Cookie"]
    assert client.get(location).status_code < 500


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/models/ui/v/1.0.0?x=1", "/models/ui/v/1.0.0?x=1"),
        ("/models/ui/\r\nSet-Cookie: x=1", "/models/ui/"),
        ("/models/ui/../../elsewhere", "/models/ui/"),
        ("/models/ui/%2e%2e/%2e%2e/elsewhere", "/models/ui/"),
        ("/models/ui/v/é", "/models/ui/v/%C3%A9"),
        ("/models/ui\t/", "/models/ui/"),
    ],
)
def test_next_keeps_a_console_page_and_drops_anything_else(
    make_app: Callable[..., Flask], target: str, location: str
) -> None:
    client = make_app(**SIGNED).test_client()
    csrf = hidden(client.get(f"{UI}/sign-in").data, "csrf_token")
    data = {"csrf_token": csrf, "token": TOKEN, "name": "alice", "next": target}
    assert client.post(f"{UI}/sign-in", data=data).headers["Location"] == location


def test_console_urls_without_their_slash_redirect_with_a_location(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    ModelRegistry(tmp_path / "fraud").save_model("3.0.0", None, {"stage": "prod"})
    client = make_app(MODEL_REGISTRY_MODELS={"fraud": str(tmp_path / "fraud")}).test_client()
    for path, target in ((f"{UI}/m/fraud", f"{UI}/m/fraud/"), (UI, f"{UI}/")):
        answer = client.get(path)
        assert answer.status_code == 308 and answer.headers["Location"] == target, answer.data
        assert answer.mimetype == "text/html"
        assert b"3.0.0" in client.get(path, follow_redirects=True).data or path == UI
    for path in (f"{UI}//v/1.0.0", f"{UI}/m//fraud/", f"{UI}/m/fraud//v/3.0.0", f"{UI}/v//1.0.0"):
        answer = client.get(path)
        assert answer.status_code < 300 or answer.status_code >= 400 or "Location" in answer.headers, path
        assert answer.status_code in (200, 404), (path, answer.status_code)


def test_the_diff_tells_a_dotted_key_from_a_nested_one(
    registry: ModelRegistry, make_app: Callable[..., Flask]
) -> None:
    registry.save_model("4.0.0", None, {"metrics.auc": 0.9, "metrics": {"auc": 0.8}, "a b": {"c": 1}})
    registry.save_model("4.1.0", None, {"metrics.auc": 0.8, "metrics": {"auc": 0.9}, "a b": {"c": 1}})
    html = make_app().test_client().get(f"{UI}/diff?a=4.0.0&b=4.1.0").data.decode()
    changed = re.findall(r'<tr class="changed">\s*<th scope="row"><code>([^<]+)</code>', html)
    assert "metrics.auc" in changed and "&#34;metrics.auc&#34;" in changed
    assert "&#34;a b&#34;.c" in html and "&#34;a b&#34;.c" not in changed
