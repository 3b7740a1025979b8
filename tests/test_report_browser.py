"""The HTML report in a real browser: Debian's headless Chromium driven by Playwright.

The project never downloads a browser: Playwright is pointed at the system Chromium
(`apt-get install chromium`; override the path with MIGMATRIX_CHROMIUM). Without
Playwright or Chromium these tests are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report import write_reports
from harness.report.html import cell_anchor
from harness.report.sample import HOSTILE, sample_results

from .ci import require

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]


def _chromium_path() -> str | None:
    candidates = [os.environ.get("MIGMATRIX_CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and Path(c).exists()), None)


def _unavailable(reason: str):
    require(reason, "browser tests")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install 'playwright>=1.40')")
    path = _chromium_path()
    if path is None:
        _unavailable("no system Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A report opened in a fresh page, recording console errors and dialogs."""

    def __init__(self, browser, out: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = (out / "index.html").as_uri()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, fragment: str = "") -> Page:
        self.page.goto(self.url + fragment)
        self.page.wait_for_load_state("load")
        return self


@pytest.fixture
def report(tmp_path):
    results = sample_results()
    write_reports(results, tmp_path / "reports")
    return results, tmp_path / "reports"


@pytest.fixture
def page(browser, report):
    p = Page(browser, report[1])
    yield p.open()
    p.page.close()


def _screenshot(page, name: str, tmp_path: Path) -> list[Path]:
    paths = [tmp_path / name]
    extra = os.environ.get("MIGMATRIX_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        paths.append(Path(extra) / name)
    for path in paths:
        page.screenshot(path=str(path), full_page=False)
        assert path.stat().st_size > 1000
    return paths


def test_no_console_errors_and_no_network(page, report):
    assert page.page.title().startswith("migmatrix default")
    page.page.click("text=unexpected only")
    assert page.errors == []
    assert page.dialogs == []
    assert all(u.startswith("file://") for u in page.requests), page.requests


def test_grid_has_every_cell_of_results(page, report):
    results, _ = report
    ids = page.page.eval_on_selector_all(
        "table.grid td.cell[data-cell-id]", "els => els.map(e => e.dataset.cellId)")
    assert sorted(ids) == sorted(c["id"] for c in results["cells"])
    overview = page.page.eval_on_selector_all(
        "table.overview td.ocell[data-cell-id]", "els => els.map(e => e.dataset.cellId)")
    assert sorted(overview) == sorted(ids)
    assert page.page.locator("#filter-count").inner_text() == (
        f"{len(ids)} of {len(ids)} cells shown")


def test_clicking_unexpected_cell_shows_detail(page, report, tmp_path):
    results, _ = report
    cell = next(c for c in results["cells"] if not c["ok"] and c["detail"]["diff"])
    detail = page.page.locator(f"#{cell_anchor(cell['id'])}")
    assert not detail.is_visible()  # details are folded away while JS runs
    page.page.locator(f'table.grid td.cell[data-cell-id="{cell["id"]}"] a').click()
    detail.wait_for(state="visible")
    offset = cell["detail"]["offset"]
    assert f"byte {offset} (0x{offset:x})" in detail.locator(".offset").inner_text()
    rows = detail.locator("table.diff tbody tr")
    assert rows.count() == len(cell["detail"]["diff"])
    assert cell["detail"]["diff"][0]["path"] in rows.first.inner_text()
    assert detail.locator("table.hex .b.err").count() == 1
    assert page.page.evaluate("location.hash") == f"#{cell_anchor(cell['id'])}"
    _screenshot(page.page, "report-detail.png", tmp_path)
    assert page.errors == []


def test_url_fragment_opens_detail(browser, report):
    results, out = report
    cell = next(c for c in results["cells"] if c["verdict"] == "truncated")
    p = Page(browser, out).open(f"#{cell_anchor(cell['id'])}")
    detail = p.page.locator(f"#{cell_anchor(cell['id'])}")
    assert detail.is_visible()
    assert "bytes unread" in detail.inner_text()
    p.page.close()


def test_filters_hide_what_they_should(page, report):
    results, _ = report
    pg = page.page
    by_verdict = pg.locator('table.grid td.cell[data-verdict="pass"]')
    rejected = pg.locator('table.grid td.cell[data-verdict="rejected"]')
    assert by_verdict.first.is_visible()

    pg.locator('#filters input[name=verdict][value="pass"]').uncheck()
    assert all(not by_verdict.nth(i).is_visible() for i in range(by_verdict.count()))
    assert rejected.first.is_visible()
    pg.locator('#filters button[type=reset]').click()
    pg.wait_for_function("!document.querySelector('td.cell.filtered')")

    pg.locator("#filters input[name=unexpected]").check()
    visible = pg.eval_on_selector_all(
        "table.grid td.cell",
        "els => els.filter(e => getComputedStyle(e).visibility !== 'hidden')"
        ".map(e => e.dataset.cellId)")
    assert sorted(visible) == sorted(c["id"] for c in results["cells"] if not c["ok"])
    pg.locator("#filters input[name=unexpected]").uncheck()

    pg.locator("#filters select[name=scenario]").select_option("ide-pio")
    sections = pg.locator("section.grid-section")
    shown = [sections.nth(i).get_attribute("data-grid-scenario")
             for i in range(sections.count()) if sections.nth(i).is_visible()]
    assert shown == ["ide-pio"]
    assert pg.locator("#filter-count").inner_text() == f"9 of {len(results['cells'])} cells shown"
    assert page.errors == []


def test_readable_without_javascript(browser, report):
    results, out = report
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto((out / "index.html").as_uri())
    assert not pg.locator("#filters").is_visible()  # no dead controls
    cell = next(c for c in results["cells"] if not c["ok"])
    assert pg.locator(f"#{cell_anchor(cell['id'])}").is_visible()  # details all shown
    assert pg.locator("table.grid td.cell").count() == len(results["cells"])
    context.close()


def test_hostile_names_show_as_text(browser, tmp_path):
    results = sample_results(hostile=True)
    write_reports(results, tmp_path / "hostile")
    p = Page(browser, tmp_path / "hostile").open()
    pg = p.page
    pg.locator("#filters input[name=details]").check()
    pg.wait_for_timeout(100)
    assert p.dialogs == []
    assert pg.locator("img").count() == 0
    assert pg.locator("script").count() == 1
    text = pg.locator("body").inner_text()
    assert HOSTILE[0] in text and HOSTILE[1] in text
    hostile_cells = [c for c in results["cells"] if c["scenario"] == HOSTILE[0]]
    for cell in hostile_cells:
        assert pg.locator("table.grid td.cell").filter(
            has=pg.locator(f'a[href="#{cell_anchor(cell["id"])}"]')).count() == 1
    assert pg.locator('a[href^="javascript:"]').count() == 0
    assert p.errors == []
    p.page.close()


def test_screenshot_of_first_screen(page, tmp_path):
    paths = _screenshot(page.page, "report-overview.png", tmp_path)
    assert paths[0].exists()
