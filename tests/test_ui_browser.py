"""The console in a real browser (Debian's chromium via Playwright) against a real HTTP server.

Every test's pages are checked for console errors and for requests outside the app (see ``tab``).
``UPDATE_SCREENSHOTS=1`` makes these tests refresh the README's screenshots under ``docs/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from browser import UNLABELLED_CONTROLS_JS, Tab, chromium, live_server, tab
from flask import Flask
from playwright.sync_api import Browser, expect

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "browser-test-token"
SIGNED = {"MODEL_REGISTRY_API_TOKEN": TOKEN, "SECRET_KEY": "browser-test-secret"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def console_registry(published: ModelRegistry, by_hand: Callable[..., Path]) -> ModelRegistry:
    """``published`` plus metrics, a hand-made version and a broken one."""
    published.update_metadata("1.0.0", {"metrics": {"auc": 0.81, "f1": 0.74}}, actor="trainer")
    published.update_metadata(
        "1.1.0", {"metrics": {"auc": 0.86, "f1": 0.79, "data": "2026-11"}}, actor="trainer"
    )
    by_hand("0.9.0", {"owner": "ml-team", "stage": "archived", "created_at": "2025-01-15T09:30:00Z"})
    by_hand("1.2.0", raw=b'{"stage": "prod", ')
    return published


@pytest.fixture
def served_apps() -> list[Flask]:
    """The apps ``serve`` started, in order: a test acts as their serving process through them."""
    return []


@pytest.fixture
def serve(
    registry_root: Path, console_registry: ModelRegistry, served_apps: list[Flask]
) -> Iterator[Callable[..., str]]:
    """``serve(**config)``: the console's app over ``console_registry``, served; its base URL."""
    with ExitStack() as stack:

        def start(**config: Any) -> str:
            app = Flask("console_under_test")
            app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), **config)
            FlaskModelRegistry(app)
            served_apps.append(app)
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """``open_tab(base, javascript=True)``: a fresh page; at the end, no console error was logged
    and no request left the app."""
    with ExitStack() as stack:
        tabs: list[Tab] = []

        def start(base: str, javascript: bool = True) -> Tab:
            opened = stack.enter_context(tab(browser, base, javascript=javascript))
            tabs.append(opened)
            return opened

        yield start
        for opened in tabs:
            assert opened.errors == [], opened.errors
            assert opened.outside() == [], opened.outside()


def sign_in(t: Tab, name: str = "alice", token: str = TOKEN) -> None:
    t.goto("/models/ui/")
    expect(t.page).to_have_url(f"{t.base}/models/ui/sign-in?next=/models/ui/")
    t.page.get_by_label("API token").fill(token)
    t.page.get_by_label("Your name").fill(name)
    t.page.get_by_role("button", name="Sign in").click()


def test_pages_load_and_show_the_registry(serve: Callable[..., str], open_tab: Callable[..., Tab]) -> None:
    t = open_tab(serve())
    assert t.goto("/models/ui/") == 200
    table = t.page.locator("table.versions")
    versions = table.locator("tbody th[scope=row]").all_inner_texts()
    assert versions == ["2.0.0-rc.1", "1.2.0", "1.1.0", "1.0.0", "0.9.0"]  # newest first
    row = table.locator("tr", has=t.page.get_by_role("link", name="1.1.0", exact=True))
    expect(row).to_contain_text("staging")
    expect(row).to_contain_text("canary")
    expect(row).to_contain_text("0.86")  # metrics.auc as a column
    assert set(table.locator("thead th.metric").all_inner_texts()) == {"auc", "f1", "data"}
    created = row.locator("time")
    assert created.get_attribute("title").endswith("Z")  # ISO on hover, human in the cell
    expect(created).to_have_text("just now")
    old = table.locator("tr", has=t.page.get_by_role("link", name="0.9.0", exact=True)).locator("time")
    expect(old).to_have_text("2025-01-15")
    expect(table.locator("tr.broken")).to_contain_text("1.2.0")
    expect(table.locator("tr.broken")).to_contain_text("not valid JSON")
    serving = t.page.locator("dl.serving")
    expect(serving.locator("div", has_text="latest").first).to_contain_text("1.2.0 (broken)")
    expect(serving.locator("div", has_text="prod")).to_contain_text("1.0.0")
    t.screenshot("ui-registry.png")

    t.page.get_by_role("link", name="1.0.0", exact=True).first.click()
    expect(t.page.locator("h1")).to_contain_text("Version 1.0.0")
    expect(t.page.locator("pre.json")).to_contain_text('"auc": 0.81')
    expect(t.page.locator("ol.timeline")).to_contain_text("update_metadata by trainer")
    expect(t.page.locator("dl.facts")).to_contain_text("cloudpickle")

    assert t.goto("/models/ui/diff?a=1.0.0&b=1.1.0") == 200
    changed = t.page.locator("table.diff tr.changed th").all_inner_texts()
    assert "stage" in changed and "metrics.auc" in changed and "metrics.data" in changed
    assert "artifact.serializer" not in changed
    t.screenshot("ui-diff.png")

    assert t.goto("/models/ui/audit") == 200
    expect(t.page.locator("table.audit tbody tr").first).to_contain_text("1.1.0")  # newest first
    t.screenshot("ui-audit.png")


def test_the_pages_work_without_javascript(serve: Callable[..., str], open_tab: Callable[..., Tab]) -> None:
    t = open_tab(serve(**SIGNED), javascript=False)
    sign_in(t)
    expect(t.page.locator("header")).to_contain_text("Signed in as alice")
    t.page.get_by_label("Stage").select_option("staging")
    t.page.get_by_role("button", name="Filter").click()
    assert t.page.locator("table.versions tbody th[scope=row]").all_inner_texts() == ["1.1.0"]
    t.page.get_by_role("link", name="1.1.0", exact=True).first.click()
    t.page.get_by_label("Canary weight (0 to 1)").fill("0.25")
    t.page.get_by_role("button", name="Set canary weight").click()
    expect(t.page.locator(".notice")).to_contain_text("1.1.0: canary weight 0.25")
    t.goto("/models/ui/diff")
    t.page.get_by_label("Left").select_option("0.9.0")
    t.page.get_by_label("Right").select_option("1.0.0")
    t.page.get_by_role("button", name="Compare").click()
    expect(t.page.locator("table.diff")).to_contain_text("ml-team")
    t.goto("/models/ui/audit")
    t.page.get_by_label("Actor").fill("alice")
    t.page.get_by_role("button", name="Filter").click()
    rows = t.page.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("0.25")


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(
    serve: Callable[..., str], open_tab: Callable[..., Tab]
) -> None:
    t = open_tab(serve(**SIGNED))
    t.goto("/models/ui/v/1.0.0")  # reading needs sign-in too: back here afterwards
    expect(t.page).to_have_url(f"{t.base}/models/ui/sign-in?next=/models/ui/v/1.0.0")
    t.page.get_by_label("API token").fill("not-the-token")
    t.page.get_by_label("Your name").fill("mallory")
    t.page.get_by_role("button", name="Sign in").click()
    expect(t.page.locator("[role=alert]")).to_contain_text("not the API token")
    t.answered(401)
    t.page.get_by_label("API token").fill(TOKEN)
    t.page.get_by_label("Your name").fill("alice")
    t.page.get_by_role("button", name="Sign in").click()
    expect(t.page).to_have_url(f"{t.base}/models/ui/v/1.0.0")
    expect(t.page.locator(".notice")).to_contain_text("Signed in as alice")
    (cookie,) = t.page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/models/ui/"
    assert TOKEN not in cookie["value"]
    t.screenshot("ui-version.png")

    t.page.get_by_role("button", name="Sign out").click()
    expect(t.page.locator(".notice")).to_contain_text("Signed out")
    t.goto("/models/ui/")
    expect(t.page).to_have_url(f"{t.base}/models/ui/sign-in?next=/models/ui/")
    expect(t.page.locator("table.versions")).to_have_count(0)


def test_a_promotion_and_a_rollback_through_the_forms(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    t = open_tab(serve(**SIGNED))
    sign_in(t, "alice")
    t.goto("/models/ui/v/1.1.0")
    t.page.get_by_label("Stage", exact=True).fill("prod")
    t.page.get_by_role("button", name="Promote").click()
    expect(t.page.locator(".notice")).to_contain_text("1.1.0: now in stage prod")
    expect(t.page.locator(".notice")).to_contain_text("its canary value true was removed")
    assert console_registry.get_latest_version("prod") == "1.1.0"
    last = console_registry.history("1.1.0")[-1]
    assert (last["actor"], last["before"], last["after"]) == (
        "alice",
        {"stage": "staging", "canary": True},  # promoting a canary ends its split, in one event
        {"stage": "prod"},
    )
    expect(t.page.locator("ol.timeline li").first).to_contain_text("by alice")

    t.goto("/models/ui/")
    t.page.locator("dl.serving div", has_text="prod").get_by_role("link", name="Roll back…").click()
    expect(t.page.locator("main")).to_contain_text("1.1.0 goes back to stage staging")
    t.screenshot("ui-rollback.png")
    t.page.get_by_role("button", name="Roll prod back to 1.0.0").click()
    expect(t.page.locator(".notice")).to_contain_text("Stage prod rolled back from 1.1.0 to 1.0.0")
    assert console_registry.get_latest_version("prod") == "1.0.0"
    assert console_registry.get_metadata("1.1.0")["stage"] == "staging"
    t.goto("/models/ui/audit?actor=alice")
    rows = t.page.locator("table.audit tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("1.1.0")
    expect(rows.first).to_contain_text('"prod" → "staging"')


def test_a_delete_through_its_confirmation_page(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    t = open_tab(serve(**SIGNED))
    sign_in(t, "alice")
    t.goto("/models/ui/v/1.0.0/delete")  # prod's version: in use, no button
    expect(t.page.locator("main")).to_contain_text("is in use and cannot be deleted")
    expect(t.page.locator("main").get_by_role("button")).to_have_count(0)
    t.goto("/models/ui/v/0.9.0")  # archived: serves nothing
    t.page.get_by_role("link", name="Delete this version…").click()
    expect(t.page.locator("main")).to_contain_text("its name can never be published again")
    t.page.get_by_role("button", name="Delete version 0.9.0").click()
    expect(t.page.locator(".notice")).to_contain_text("Version 0.9.0 deleted")
    assert "0.9.0" not in console_registry.list_versions()
    assert console_registry.history("0.9.0")[-1]["actor"] == "alice"


def test_a_form_without_its_csrf_token_is_refused(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    t = open_tab(serve(**SIGNED))
    sign_in(t)
    t.goto("/models/ui/v/1.1.0")
    form = t.page.locator("form", has=t.page.get_by_role("button", name="Promote"))
    form.locator("input[name=csrf_token]").evaluate("el => el.remove()")
    form.get_by_label("Stage").fill("prod")
    form.get_by_role("button", name="Promote").click()
    expect(t.page.locator("[role=alert]")).to_contain_text("CSRF")
    assert console_registry.get_metadata("1.1.0")["stage"] == "staging"
    t.answered(403)


def test_a_stale_form_is_refused(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    t = open_tab(serve(**SIGNED))
    sign_in(t)
    t.goto("/models/ui/v/1.1.0")
    console_registry.update_metadata("1.1.0", {"canary": None}, actor="someone-else")  # behind our back
    t.page.get_by_label("Stage", exact=True).fill("prod")
    t.page.get_by_role("button", name="Promote").click()
    expect(t.page.locator("[role=alert]")).to_contain_text("changed since this page was shown")
    assert console_registry.get_metadata("1.1.0")["stage"] == "staging"
    t.page.get_by_label("Stage", exact=True).fill("prod")  # the page shown now is current
    t.page.get_by_role("button", name="Promote").click()
    expect(t.page.locator(".notice")).to_contain_text("now in stage prod")
    t.answered(409)


def test_read_only_mode_shows_no_forms_and_says_how_to_enable_writes(
    serve: Callable[..., str], open_tab: Callable[..., Tab]
) -> None:
    t = open_tab(serve())
    for path in ("/models/ui/", "/models/ui/v/1.1.0", "/models/ui/rollback?stage=prod"):
        t.goto(path)
        expect(t.page.locator(".banner")).to_contain_text("MODEL_REGISTRY_API_TOKEN")
        expect(t.page.locator("form[method=post]")).to_have_count(0)
    t.goto("/models/ui/sign-in")
    expect(t.page.locator("main")).to_contain_text("nothing to sign in to")
    t.answered(404)  # the sign-in page answers 404 here


def test_every_form_control_has_a_label(serve: Callable[..., str], open_tab: Callable[..., Tab]) -> None:
    t = open_tab(serve(**SIGNED))
    t.goto("/models/ui/sign-in")
    assert t.page.evaluate(UNLABELLED_CONTROLS_JS) == []
    sign_in(t)
    for path in ("/models/ui/", "/models/ui/v/1.1.0", "/models/ui/diff", "/models/ui/audit"):
        t.goto(path)
        assert t.page.locator("input:not([type=hidden]), select, button").count() > 0, path
        assert t.page.evaluate(UNLABELLED_CONTROLS_JS) == [], path


def test_keyboard_alone_signs_in_and_promotes(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    t = open_tab(serve(**SIGNED))
    t.goto("/models/ui/sign-in")
    keyboard = t.page.keyboard

    def tab_to(element_id: str) -> None:
        for _ in range(60):
            keyboard.press("Tab")
            if t.page.evaluate("document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reached #{element_id}")

    tab_to("token")
    keyboard.type(TOKEN)
    tab_to("name")
    keyboard.type("kim")
    keyboard.press("Enter")
    expect(t.page.locator("header")).to_contain_text("Signed in as kim")
    t.goto("/models/ui/v/1.1.0")
    tab_to("promote-stage")
    keyboard.type("prod")
    keyboard.press("Enter")
    expect(t.page.locator(".notice")).to_contain_text("now in stage prod")
    assert console_registry.get_metadata("1.1.0")["stage"] == "prod"
    assert console_registry.history("1.1.0")[-1]["actor"] == "kim"


#: The widest a document may be at a phone's width, and the pages checked at it.
PHONE = {"width": 390, "height": 844}
SCROLL_WIDTH_JS = "() => [document.documentElement.scrollWidth, window.innerWidth]"


def test_pages_fit_a_390_px_screen(
    serve: Callable[..., str], open_tab: Callable[..., Tab], console_registry: ModelRegistry
) -> None:
    console_registry.update_metadata("1.0.0", {"notes": "x" * 400, "owner": "a-very-long-unbroken-" * 8})
    t = open_tab(serve(**SIGNED))
    t.page.set_viewport_size(PHONE)
    sign_in(t)
    for page in ("", "v/1.0.0", "v/1.1.0", "diff", "audit"):
        path = f"/models/ui/{page}"
        t.goto(path)
        scroll_width, width = t.page.evaluate(SCROLL_WIDTH_JS)
        assert width == PHONE["width"] and scroll_width <= width, (path, scroll_width)
    promote = t.page.get_by_role("button", name="Promote")
    t.goto("/models/ui/v/1.0.0")
    box = promote.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    sha = t.page.locator("code.sha")
    expect(sha).to_have_text(console_registry.get_metadata("1.0.0")["artifact"]["sha256"])  # whole, wrapped
    t.screenshot("ui-version-phone.png")


def test_serving_now_shows_the_canary_and_a_version_that_failed_to_load(
    serve: Callable[..., str],
    served_apps: list[Flask],
    open_tab: Callable[..., Tab],
    console_registry: ModelRegistry,
    registry_root: Path,
    by_hand: Callable[..., Path],
) -> None:
    t = open_tab(serve())
    serving = served_apps[-1].registry  # this process serves predictions too
    assert serving.route("user-1", stage="prod").version in ("1.0.0", "1.1.0")
    console_registry.save_model("1.3.0", {"weights": [1.3]}, {"stage": "prod"})
    (registry_root / "versions" / "1.3.0" / "model.pkl").write_bytes(b"not the bytes hashed")
    console_registry.save_model("1.4.0", {"weights": [1.4]}, {"stage": "staging", "canary": 0.3})
    by_hand("0.8.0", {"created_at": "0001-01-01T00:00:00+14:00", "artifact": {"size": "big"}})
    assert {serving.route(f"user-{n}", stage="prod").version for n in range(100)} == {"1.0.0", "1.4.0"}

    assert t.goto("/models/ui/") == 200
    prod = t.page.locator("dl.serving div.stage-serving", has=t.page.locator("dt .stage-prod"))
    expect(prod.locator(".stable")).to_contain_text("1.3.0 stable")
    expect(prod.locator(".canary")).to_contain_text("canary 1.4.0 weight 0.3 (30% of traffic)")
    expect(prod.locator(".failed")).to_contain_text("1.3.0 failed to load in this process")
    expect(prod.locator(".failed")).to_contain_text("route() here serves 1.0.0 instead")
    table = t.page.locator("table.versions")
    old = table.locator("tr", has=t.page.get_by_role("link", name="1.0.0", exact=True))
    expect(old.locator(".role")).to_have_text("older")
    odd = table.locator("tr", has=t.page.get_by_role("link", name="0.8.0", exact=True))
    expect(odd.locator("time")).to_have_text("0001-01-01T00:00:00+14:00")
    expect(odd.locator(".odd")).to_have_text('"big"')
    t.screenshot("ui-serving.png")
    assert t.goto("/models/ui/v/0.8.0") == 200
    expect(t.page.locator("dl.facts")).to_contain_text("0001-01-01T00:00:00+14:00")
