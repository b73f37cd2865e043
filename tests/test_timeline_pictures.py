"""The console's pictures: a stage's timeline (``<prefix>/ui/stage/<stage>``, linked from every stage
badge) and each numeric metric across the listed versions, as server-rendered SVG; in Chromium too."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, live_server, tab
from flask import Flask
from playwright.sync_api import Browser, expect

from flask_model_registry import ModelRegistry

HOSTILE_NAME = "</svg><script>alert(1)</script>"
HOSTILE_ACTOR = 'alice "><script>alert(2)</script>'


@pytest.fixture
def history(registry: ModelRegistry) -> ModelRegistry:
    """prod: 1.0.0, then 1.1.0, then 1.2.0 (archived, then deleted), 1.1.0 again, then 1.3.0;
    metrics on the first three."""
    registry.save_model("1.0.0", "a", {"stage": "prod", "metrics": {"auc": 0.81, "f1": 0.7}}, actor="ci")
    registry.save_model("1.1.0", "b", {"stage": "prod", "metrics": {"auc": 0.86}}, actor=HOSTILE_ACTOR)
    registry.save_model("1.2.0", "c", {"stage": "prod", "metrics": {"auc": 0.9}}, actor="bob")
    registry.set_stage("1.2.0", "archived", actor="bob")
    registry.save_model("1.3.0", "d", {"stage": "prod"}, actor="ci")  # 1.2.0 is no rollback target now
    registry.delete_version("1.2.0", actor="ops")
    return registry


def test_the_stage_page_draws_each_period(client: Any, history: ModelRegistry) -> None:
    response = client.get("/models/ui/stage/prod")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    svg = html[html.index("<svg") : html.index("</svg>")]
    titles = re.findall(r'<rect class="period[^"]*"[^>]*><title>([^<]*)</title>', svg)
    assert [t.split(":")[0] for t in titles] == ["1.0.0", "1.1.0", "1.2.0", "1.1.0", "1.3.0"]
    assert "by alice &#34;&gt;&lt;script&gt;" in titles[1] and titles[-1].split(" → ")[1].startswith("now")
    assert svg.count('class="period current"') == 1
    assert 'href="/models/ui/audit?version=1.2.0"' in svg  # deleted: its events, not a missing page
    assert "<script" not in html


def test_every_stage_badge_links_to_its_stage_page(client: Any, history: ModelRegistry) -> None:
    for path in ("/models/ui/", "/models/ui/v/1.1.0"):
        html = client.get(path).get_data(as_text=True)
        assert re.search(r'<a class="badge stage stage-prod" href="/models/ui/stage/prod"', html), path
    assert client.get("/models/ui/stage/nowhere").status_code == 200
    assert "has held no version" in client.get("/models/ui/stage/nowhere").get_data(as_text=True)
    assert client.get("/models/ui/stage/no%20such").status_code == 400


def test_metric_charts_mark_each_version_that_has_a_number(client: Any, registry: ModelRegistry) -> None:
    """Hostile values (huge, boolean, text, nested, a name made to break out of the SVG) cost their
    own mark only."""
    values: list[Any] = [0.8, 0.82, 0.85, 0.9, 1e300, True, "0.9", {"v": 1}, [1], 10**200, -1e300, 0.86]
    for i, value in enumerate(values):
        registry.save_model(f"1.{i}.0", "m", {"metrics": {"auc": value, HOSTILE_NAME: i}}, actor="ci")
    html = client.get("/models/ui/").get_data(as_text=True)
    charts = dict(
        re.findall(r'<svg class="chart metric".*?<title>(.*?) across \d+ versions</title>(.*?)</svg>', html)
    )
    assert set(charts) == {"auc", HOSTILE_NAME.replace("<", "&lt;").replace(">", "&gt;")}
    auc = charts["auc"]
    marks = re.findall(r'<circle class="(mark[^"]*)"[^>]*><title>([^:]*):', auc)
    numbers = [f"1.{i}.0" for i, v in enumerate(values) if type(v) in (int, float)]
    assert [version for _, version in marks] == numbers
    off = {version for css, version in marks if "off-scale" in css}
    assert off == {"1.4.0", "1.9.0", "1.10.0"}
    assert "<script>" not in html
    hostile = next(svg for name, svg in charts.items() if name != "auc")
    assert hostile.count('<circle class="mark"') == len(values)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.mark.parametrize("javascript", [True, False])
def test_the_pictures_in_chromium(
    browser: Browser, app: Flask, history: ModelRegistry, javascript: bool, registry_root: Path
) -> None:
    """Chromium draws both pictures from the server's SVG alone (with and without JavaScript),
    requests nothing outside the app and logs no error; a bar leads to its version's page."""
    with live_server(app) as base, tab(browser, base, javascript=javascript) as t:
        assert t.goto("/models/ui/") == 200
        marks = t.page.locator("svg.chart.metric circle.mark")
        expect(marks).to_have_count(3)  # auc of 1.0.0 and 1.1.0, f1 of 1.0.0 (1.2.0 was deleted)
        box = marks.first.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        t.page.locator("table.versions a.badge.stage-prod").first.click()
        expect(t.page.locator("h1")).to_contain_text("Stage prod")
        bars = t.page.locator("svg.chart.timeline rect.period")
        expect(bars).to_have_count(5)
        widths = [bars.nth(i).bounding_box()["width"] for i in range(5)]  # type: ignore[index]
        assert all(width >= 2 for width in widths)
        expect(t.page.locator("svg.chart.timeline rect.current")).to_have_count(1)
        expect(t.page.locator("table.periods tbody tr")).to_have_count(5)
        t.page.locator("svg.chart.timeline a", has=t.page.locator("rect.current")).click()
        expect(t.page.locator("h1")).to_contain_text("Version 1.3.0")
        assert t.errors == [] and t.outside() == []


def test_a_timeline_of_days_reads_as_days_in_chromium(
    browser: Browser, app: Flask, registry: ModelRegistry, by_hand: Callable[..., Path]
) -> None:
    """Versions made by hand 20, 11 and 2 days ago, then the newest sent back to staging: each bar
    as long as its period (prod was 1.1.0 for 9 days, then 1.2.0 for 2)."""
    now = datetime.now(timezone.utc)
    for version, days, auc in (("1.0.0", 20, 0.81), ("1.1.0", 11, 0.84), ("1.2.0", 2, 0.79)):
        created = (now - timedelta(days=days)).isoformat().replace("+00:00", "Z")
        by_hand(version, {"stage": "prod", "created_at": created, "metrics": {"auc": auc}})
    registry.set_stage("1.2.0", "staging", actor="oncall")
    with live_server(app) as base, tab(browser, base) as t:
        assert t.goto("/models/ui/stage/prod") == 200
        bars = t.page.locator("svg.chart.timeline rect.period")
        expect(bars).to_have_count(4)
        widths = [box["width"] for box in (bars.nth(i).bounding_box() for i in range(4)) if box]
        assert widths[1] == pytest.approx(widths[0], rel=0.05)  # 9 days each: 20 → 11, 11 → 2 days ago
        assert widths[2] == pytest.approx(widths[1] * 2 / 9, rel=0.05)  # then 2 days
        expect(t.page.locator("table.periods tbody tr").nth(1)).to_contain_text("2 days")
        t.screenshot("ui-stage.png")
        assert t.errors == [] and t.outside() == []
