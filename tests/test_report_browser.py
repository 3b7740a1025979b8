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

    def __init__(self, browser, out: Path, width: int = 1400) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": 900})
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
        "table.overview td.ocell[data-cell-id]", "els => els.map(e => e.dataset.cellId)")
    assert sorted(ids) == sorted(c["id"] for c in results["cells"])
    assert page.page.locator("#filter-count").inner_text() == (
        f"{len(ids)} of {len(ids)} cells shown")


def _box(locator):
    box = locator.bounding_box()
    assert box is not None
    return box


def test_the_grid_fits_1400px_and_its_header_row_stays_in_view(page, report):
    pg = page.page
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert pg.locator(".grid-wrap.fits").count() == 1
    table = _box(pg.locator("table.overview"))
    bar = _box(pg.locator("#bar"))
    # Scroll the table's top 100 px past the bar's bottom edge.
    pg.evaluate(f"window.scrollTo(0, {table['y'] - bar['height'] + 100})")
    bar = _box(pg.locator("#bar"))
    assert bar["y"] == 0  # the bar sticks at the top
    header = _box(pg.locator("table.overview thead th.col").first)
    assert abs(header["y"] - bar["height"]) <= 2  # stuck under the bar, not scrolled away
    assert _box(pg.locator("table.overview"))["y"] < bar["height"] - 90
    assert page.errors == []


def test_a_grid_too_wide_scrolls_with_its_pair_column_in_view(browser, report):
    p = Page(browser, report[1], width=700).open()
    pg = p.page
    assert pg.locator(".grid-wrap.fits").count() == 0
    wrap = pg.locator(".grid-wrap")
    pair = pg.locator("table.overview tbody th.pair").first
    left = _box(pair)["x"]
    wrap.evaluate("w => { w.scrollLeft = 400; w.scrollTop = 200; }")
    assert abs(_box(pair)["x"] - left) <= 1  # the first column stays
    assert abs(_box(pg.locator("table.overview thead th.col").first)["y"]
               - _box(wrap)["y"]) <= 2  # and so does the header row
    p.page.close()


def test_clicking_a_grid_cell_opens_its_detail_below_the_bar(page, report, tmp_path):
    results, _ = report
    cell = next(c for c in results["cells"] if c["detail"].get("cause"))
    anchor = cell_anchor(cell["id"])
    detail = page.page.locator(f"#{anchor}")
    assert not detail.is_visible()  # details are folded away while JS runs
    assert detail.locator("table.hex").count() == 0  # byte views are drawn on demand
    page.page.locator(f'table.overview td.ocell[data-cell-id="{cell["id"]}"] a').click()
    detail.wait_for(state="visible")
    assert page.page.evaluate("location.hash") == f"#{anchor}"
    bar = _box(page.page.locator("#bar"))
    assert _box(detail)["y"] >= bar["y"] + bar["height"] - 1  # not hidden under the bar
    # It leads with the cause: the summary, the readings side by side, the cause byte.
    text = detail.inner_text()
    assert text.index("Cause: the readings part at byte") < text.index("Symptom")
    cause = cell["detail"]["cause"]
    first = detail.locator("table.sbs tr.first")
    assert first.count() == 1 and "ide/bus[1]/cmd = 5" in first.inner_text()
    focus = detail.locator(".hexview table.hex .b.focus")
    assert focus.count() == 1 and focus.inner_text().startswith("05")
    assert "m-cause" in (focus.get_attribute("class") or "")
    offset = cell["detail"]["offset"]
    assert f"byte {offset} (0x{offset:x})" in detail.locator(".offset").inner_text()
    rows = detail.locator("table.diff tbody tr")
    assert rows.count() == len(cell["detail"]["diff"]) + len(cell["detail"]["one_sided"])
    assert cell["detail"]["diff"][0]["path"] in rows.first.inner_text()
    one_sided = detail.locator("table.diff tr.one-sided")
    assert "not defined by" in one_sided.inner_text()
    assert cause["offset"] == int(detail.locator(".hexview").first.get_attribute("data-focus"))
    _screenshot(page.page, "report-detail.png", tmp_path)
    assert page.errors == []


def test_field_paths_wrap_only_after_a_slash(browser, tmp_path):
    results = sample_results()
    cell = next(c for c in results["cells"] if c["detail"]["diff"])
    long_path = "/".join(["0000:00:01.1", "ide", "bus[0]", "ifs[1]", "identify_data_long"] * 3)
    cell["detail"]["diff"][0]["path"] = long_path
    write_reports(results, tmp_path / "r")
    p = Page(browser, tmp_path / "r", width=700).open(f"#{cell_anchor(cell['id'])}")
    td = p.page.locator(f"#{cell_anchor(cell['id'])} table.diff td.path").first
    lines = td.evaluate("""td => {
        const r = document.createRange(); r.selectNodeContents(td);
        const tops = new Set(); const out = [];
        for (const node of td.childNodes) {
            if (node.nodeType !== 3) continue;
            const rr = document.createRange(); rr.selectNodeContents(node);
            const rects = rr.getClientRects();
            if (rects.length > 1) out.push(node.textContent);
        }
        return out; }""")
    assert lines == []  # no part of the path (between slashes) is split over two lines
    assert td.evaluate("td => td.getClientRects()[0].height") > 20  # it did wrap
    p.page.close()


def test_url_fragment_opens_detail(browser, report):
    results, out = report
    cell = next(c for c in results["cells"] if c["verdict"] == "truncated")
    p = Page(browser, out).open(f"#{cell_anchor(cell['id'])}")
    detail = p.page.locator(f"#{cell_anchor(cell['id'])}")
    assert detail.is_visible()
    assert "bytes unread" in detail.inner_text()
    p.page.close()


def _visible_cells(pg) -> list[str]:
    return pg.eval_on_selector_all(
        "table.overview td.ocell",
        "els => els.filter(e => e.offsetParent !== null && "
        "!e.classList.contains('filtered')).map(e => e.dataset.cellId)")


def test_filters_collapse_empty_rows_columns_and_groups(page, report):
    results, _ = report
    pg = page.page
    rows = pg.locator("table.overview tbody tr")
    total_rows = rows.count()

    pg.locator('#filters input[name=verdict][value="pass"]').uncheck()
    shown = _visible_cells(pg)
    assert shown and all(c["verdict"] != "pass" for c in results["cells"] if c["id"] in shown)
    pg.locator('#filters button[type=reset]').click()
    # A locator wait polls from outside the page; wait_for_function's polling evaluates
    # a string inside it, which the report's content security policy forbids.
    pg.locator("td.ocell.filtered").first.wait_for(state="detached")
    assert len(_visible_cells(pg)) == len(results["cells"])

    pg.locator("#filters input[name=unexpected]").check()
    unexpected = sorted(c["id"] for c in results["cells"] if not c["ok"])
    assert sorted(_visible_cells(pg)) == unexpected
    visible_rows = [i for i in range(total_rows) if rows.nth(i).is_visible()]
    pairs = {(c["source"]["endpoint"], c["destination"]["endpoint"])
             for c in results["cells"] if not c["ok"]}
    assert len(visible_rows) == len(pairs)  # rows with no unexpected cell collapse
    columns = pg.eval_on_selector_all(
        "table.overview thead th.col", "els => els.filter(e => e.offsetParent !== null)"
        ".map(e => e.textContent)")
    assert len(columns) == len({c["id"].rsplit("[", 1)[1].rstrip("]")
                                for c in results["cells"] if not c["ok"]})
    groups = pg.locator("[data-known-group]")
    for i in range(groups.count()):
        g = groups.nth(i)
        if g.is_visible():
            assert g.locator("li:visible").count() >= 1  # no empty group is left
    pg.locator("#filters input[name=unexpected]").uncheck()

    pg.locator("#filters select[name=scenario]").select_option("ide-pio")
    assert {i.rsplit("[", 1)[1] for i in _visible_cells(pg)} == {"ide-pio]"}
    assert pg.locator("#filter-count").inner_text() == f"9 of {len(results['cells'])} cells shown"

    for v in ("pass", "rejected", "corrupted", "truncated", "crashed", "timeout", "error"):
        pg.locator(f'#filters input[name=verdict][value="{v}"]').uncheck()
    assert pg.locator("#grid-empty").is_visible()
    assert not pg.locator(".grid-wrap").is_visible()
    assert pg.locator("#known .filter-empty").is_visible()
    assert pg.locator("#unexpected .filter-empty").is_visible()
    assert page.errors == []


def test_readable_without_javascript(browser, report):
    results, out = report
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto((out / "index.html").as_uri())
    assert not pg.locator("#filters").is_visible()  # no dead controls
    cell = next(c for c in results["cells"] if not c["ok"])
    assert pg.locator(f"#{cell_anchor(cell['id'])}").is_visible()  # details all shown
    assert pg.locator("table.overview td.ocell").count() == len(results["cells"])
    caused = next(c for c in results["cells"] if c["detail"].get("cause"))
    detail = pg.locator(f"#{cell_anchor(caused['id'])}")
    assert caused["detail"]["cause"]["summary"] in detail.inner_text()
    assert detail.locator("table.sbs tr.first").is_visible()
    assert "byte views need JavaScript" in pg.locator("#details > noscript").inner_text()
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
    assert pg.locator("script:not([type])").count() == 1
    text = pg.locator("body").inner_text()
    assert HOSTILE[0] in text and HOSTILE[1] in text
    hostile_cells = [c for c in results["cells"] if c["scenario"] == HOSTILE[0]]
    for cell in hostile_cells:
        assert pg.locator("table.overview td.ocell").filter(
            has=pg.locator(f'a[href="#{cell_anchor(cell["id"])}"]')).count() == 1
    assert pg.locator('a[href^="javascript:"]').count() == 0
    # Marks from the stream are drawn into the byte views as text.
    assert pg.locator(".hexview table.hex").count() >= 1
    assert p.errors == []
    p.page.close()


def test_screenshot_of_first_screen(page, tmp_path):
    paths = _screenshot(page.page, "report-overview.png", tmp_path)
    assert paths[0].exists()


def _routine_rejected(results):
    return next(c for c in results["cells"] if c["ok"] and c["verdict"] == "rejected"
                and not c.get("known_issue") and c["detail"].get("window"))


def test_a_large_reports_routine_details_open_from_the_compressed_block(browser, tmp_path,
                                                                          monkeypatch):
    from harness.report import html

    monkeypatch.setattr(html, "LAZY_FROM", 2)  # the sample's 100-odd details count as large
    results = sample_results()
    write_reports(results, tmp_path / "r")
    cell = _routine_rejected(results)
    p = Page(browser, tmp_path / "r").open(f"#{cell_anchor(cell['id'])}")
    detail = p.page.locator(f"#{cell_anchor(cell['id'])}")
    detail.locator("h4", has_text="Reproduce").wait_for()
    assert detail.get_attribute("data-lazy") is None
    detail.locator(".hexview table").first.wait_for()  # the byte view is drawn too
    assert cell["detail"]["message"] in detail.inner_text()
    p.page.check("input[name=details]")  # every stub is filled
    p.page.wait_for_function("!document.querySelector('section[data-lazy]')")
    assert p.errors == []
    p.page.close()


def test_a_large_reports_stubs_are_readable_without_javascript(browser, tmp_path, monkeypatch):
    from harness.report import html

    monkeypatch.setattr(html, "LAZY_FROM", 2)
    results = sample_results()
    write_reports(results, tmp_path / "r")
    cell = _routine_rejected(results)
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto((tmp_path / "r" / "index.html").as_uri())
    text = pg.locator(f"#{cell_anchor(cell['id'])}").inner_text()
    assert cell["detail"]["message"] in text and "migmatrix run" in text
    assert "open with the cell" in pg.locator("#details .lazy-note").inner_text()
    context.close()


def test_a_stub_says_so_where_the_browser_cannot_open_the_compressed_block(browser, tmp_path,
                                                                          monkeypatch):
    from harness.report import html

    monkeypatch.setattr(html, "LAZY_FROM", 2)
    results = sample_results()
    write_reports(results, tmp_path / "r")
    cell = _routine_rejected(results)
    p = Page(browser, tmp_path / "r")
    p.page.add_init_script("delete window.DecompressionStream;")  # an older browser
    p.open(f"#{cell_anchor(cell['id'])}")
    detail = p.page.locator(f"#{cell_anchor(cell['id'])}")
    detail.locator(".lazy-failed").wait_for()
    assert cell["detail"]["message"] in detail.inner_text()
    p.page.check("input[name=details]")  # the other controls keep working
    assert "cells shown" in p.page.locator("#filter-count").inner_text()
    assert p.errors == []
    p.page.close()
