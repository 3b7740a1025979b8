"""The report package: results schema, HTML rendering and escaping, JUnit, shards, baseline."""

from __future__ import annotations

import copy
import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import markupsafe
import pytest

from harness.report import (
    SCHEMA,
    ResultsError,
    build_junit,
    diff_against_baseline,
    load_results,
    merge_results,
    render_html,
    summarize,
    write_junit,
    write_reports,
)
from harness.report.html import cell_anchor
from harness.report.sample import HOSTILE, sample_results
from harness.shards import shard_cells, shard_of

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def results():
    return sample_results()


@pytest.fixture
def hostile():
    return sample_results(hostile=True)


def shard_run(full: dict, index: int, count: int) -> dict:
    """What the runner writes for `--shard index/count` of the same matrix."""
    res = copy.deepcopy(full)
    res["cells"] = shard_cells(res["cells"], index, count)
    res["shard"] = {"index": index, "count": count}
    res["host"] = f"runner-{index}"
    res["started"] = f"2024-05-14T09:3{index}:00+00:00"
    res["finished"] = f"2024-05-14T09:3{index}:20+00:00"
    res["duration_s"] = 20.0 + index
    for cell in res["cells"]:
        cell["duration_s"] = cell["duration_s"] + 0.001 * index
    res["summary"] = summarize(res["cells"])
    return res


def without_timing(results: dict) -> dict:
    """Results minus the fields that legitimately differ between runs."""
    res = copy.deepcopy(results)
    for key in ("host", "started", "finished", "duration_s", "shard", "merge"):
        res.pop(key, None)
    res["cells"] = sorted(res["cells"], key=lambda c: c["id"])
    for cell in res["cells"]:
        cell.pop("duration_s", None)
    return res


# --------------------------------------------------------------------------- schema


def test_sample_results_is_valid_and_has_every_verdict(results, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    loaded = load_results(path)
    assert loaded["schema"] == SCHEMA
    assert len(loaded["cells"]) == 3 * 3 * 15
    assert all(n > 0 for n in loaded["summary"]["by_verdict"].values())
    assert loaded["summary"]["unexpected"] > 0 and loaded["summary"]["known_issues"] > 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("matrix"), "missing key 'matrix'"),
        (lambda r: r.update(schema="migmatrix/results/0"), "schema: expected"),
        (lambda r: r["cells"][3].update(verdict="exploded"), "cells[3] (0.14/pc->0.14/pc[ide-bus-error]).verdict: 'exploded' is not one of"),
        (lambda r: r["cells"][0].pop("ok"), "cells[0]: missing key 'ok'"),
        (lambda r: r["cells"][0].update(ok="yes"), "cells[0].ok: expected boolean"),
        (lambda r: r["cells"][0]["detail"].update(offset=True), ".detail.offset: expected integer or null, got boolean"),
        (lambda r: r.update(shard={"index": 4, "count": 3}), "shard: index 4 not within 1..3"),
    ],
)
def test_load_results_names_file_and_key(results, tmp_path, mutate, message):
    mutate(results)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ResultsError) as info:
        load_results(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_load_results_rejects_non_json_and_missing_file(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=r"r\.json: not JSON"):
        load_results(bad)
    with pytest.raises(ResultsError, match="cannot read"):
        load_results(tmp_path / "absent.json")


def test_summarize_counts(results):
    s = summarize(results["cells"])
    assert s["total"] == len(results["cells"])
    assert s["ok"] + s["unexpected"] == s["total"]
    assert sum(s["by_verdict"].values()) == s["total"]
    assert s["unexpected"] == sum(not c["ok"] for c in results["cells"])


# --------------------------------------------------------------------------- html


def test_render_html_is_self_contained(results):
    page = render_html(results)
    assert page.startswith("<!DOCTYPE html>")
    # No external assets: no src= and no links or imports to other origins.
    assert not re.search(r"""\ssrc\s*=""", page)
    assert not re.search(r"""<link\b""", page)
    assert "@import" not in page
    assert not re.search(r"""href="(?!#)(?!https://example\.org/)""", page)
    assert "default-src 'none'" in page


def test_first_screen_says_counts_and_names_unexpected(results):
    page = render_html(results)
    head = page[: page.index('id="known"')]
    s = results["summary"]
    assert f"{s['unexpected']} unexpected" in head
    assert f"<strong>{s['total']}</strong> cells" in head
    for cell in results["cells"]:
        if not cell["ok"]:
            assert html.escape(cell["id"]) in head
    assert "inprocess" in head and "ci-runner-7" in head and "2024-05-14T09:30:00" in head


def test_every_cell_has_one_grid_entry_and_a_detail_anchor(results):
    page = render_html(results)
    grid = page[page.index('<table class="overview">'): page.index('id="unexpected"')]
    for cell in results["cells"]:
        cid = html.escape(cell["id"])
        assert grid.count(f'data-cell-id="{cid}"') == 1
        assert f'id="{cell_anchor(cell["id"])}"' in page
    assert grid.count('<td class="ocell') == len(results["cells"])


def test_the_grid_comes_first_then_unexpected_then_known_issues(results):
    page = render_html(results)
    order = [page.index(f'<section id="{s}"') for s in ("grid", "unexpected", "known",
                                                       "details", "legend")]
    assert order == sorted(order)


def test_anchors_are_unique_and_fragment_safe(results):
    anchors = {cell_anchor(c["id"]) for c in results["cells"]}
    assert len(anchors) == len(results["cells"])
    assert all(re.fullmatch(r"cell-[A-Za-z0-9-]+", a) for a in anchors)


def _detail(page: str, cell_id: str) -> str:
    start = page.index(f'id="{cell_anchor(cell_id)}"')
    return page[start: page.index("</section>", start)]


def _windows(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="windows">(.*?)</script>', page,
                      re.S)
    assert block is not None
    return json.loads(block.group(1))


def test_detail_leads_with_the_cause_then_symptom_diff_and_commands(results):
    page = render_html(results)
    cell = next(c for c in results["cells"] if c["id"] == "0.14/pc->new/pc-0.14[ide-bus-error]")
    detail = _detail(page, cell["id"])
    cause = cell["detail"]["cause"]
    assert detail.index("Cause: the readings part at byte") < detail.index("Symptom")
    assert str(markupsafe.escape(cause["summary"])) in detail
    # The writer's element and the destination's reading side by side, the first parted
    # row marked.
    assert '<tr class="diverged first"><td class="off">' + str(cause["offset"]) in detail
    assert "field ide/bus[1]/cmd = 5 (0x5)" in detail
    offset = cell["detail"]["offset"]
    assert f"byte {offset} (0x{offset:x})" in detail
    assert "ide/<wbr>bus[0]/<wbr>error_status" in detail  # breaks only after a slash
    assert "4 (0x4)" in detail and "0 (0x0)" in detail
    assert "not defined by 0.14/pc" in detail  # a field only the destination defines
    assert "Unexpected: got corrupted, expected pass." in detail
    assert html.escape(cell["expected_rule"]) in detail
    assert html.escape(cell["commands"]["save"]) in detail
    # The byte view: a reference into the page's window table, focused on the cause.
    key = re.search(r'class="hexview" data-window="(\w+)" data-focus="(\d+)"', detail)
    assert key is not None and int(key.group(2)) == cause["offset"]
    window = _windows(page)[key.group(1)]
    assert window["s"] == cause["window"]["start"] and window["h"] == cause["window"]["hex"]
    assert [cause["offset"], cause["offset"] + 1, "cause",
            "read by new/pc-0.14 as field ide/bus[1]/cmd = 5"] in window["m"]


def test_byte_windows_are_stored_once(results):
    page = render_html(results)
    windows = _windows(page)
    keys = re.findall(r'data-window="(\w+)"', page)
    assert set(keys) == set(windows)
    assert len(windows) <= len(keys)


def test_a_window_with_thousands_of_marks_is_cut(results):
    cell = next(c for c in results["cells"]
                if c["detail"].get("window") and not c["detail"].get("cause"))
    window = cell["detail"]["window"]
    window["marks"] = [{"offset": window["start"] + i % 50, "end": window["start"] + 60,
                        "label": f"mark {i} " + "x" * 40, "kind": "field"}
                       for i in range(20000)]
    page = render_html(results)
    stored = next(w for w in _windows(page).values() if w["more"])
    assert len(stored["m"]) == 64 and stored["more"] == 20000 - 64
    assert len(page) < 2 * len(render_html(sample_results()))


def test_known_issues_are_grouped_by_note(results):
    page = render_html(results)
    known = page[page.index('<section id="known"'): page.index('<section id="details"')]
    notes = {c["known_issue"]["text"] for c in results["cells"] if c["known_issue"]}
    for note in notes:
        assert known.count(f'<p class="note">{html.escape(note)}') == 1
    for cell in results["cells"]:
        if cell["known_issue"]:
            assert f'href="#{cell_anchor(cell["id"])}"' in known
    assert "KI passed" in known  # the known issue that passed


def test_interrupted_and_shard_banners(results):
    results["finished"] = None
    results["shard"] = {"index": 2, "count": 3}
    results["total_cells"] = 400
    page = render_html(results)
    assert "Interrupted run" in page and "Shard 2/3" in page and "out of 400" in page


def test_hostile_strings_are_escaped(hostile):
    page = render_html(hostile)
    for evil in HOSTILE:
        assert evil not in page
    assert "<script>alert" not in page
    assert "<img" not in page
    assert "onerror=alert(1)>" not in page
    # Exactly one script element that runs: ours; and the byte windows as data.
    assert len(re.findall(r"<script>", page)) == 1
    assert len(re.findall(r"<script\b", page)) == 2
    assert '<script type="application/json" id="windows">' in page
    assert html.escape(HOSTILE[0]) in page
    # The javascript: link is shown as text, never as an href.
    assert 'href="javascript:' not in page.lower()


def test_rendering_is_deterministic(results):
    assert render_html(results) == render_html(copy.deepcopy(results))


# --------------------------------------------------------------------------- junit


def test_junit_structure(results, tmp_path):
    path = write_junit(results, tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 15
    cases = root.iter("testcase")
    by_name = {c.get("name"): c for c in cases}
    assert set(by_name) == {c["id"] for c in results["cells"]}
    for cell in results["cells"]:
        case = by_name[cell["id"]]
        assert case.get("classname") == (
            f"{cell['source']['endpoint']}->{cell['destination']['endpoint']}")
        if not cell["ok"]:
            tag = "error" if cell["verdict"] == "error" else "failure"
            el = case.find(tag)
            assert el is not None and el.get("type") == cell["verdict"]
            assert cell["detail"]["message"] in el.get("message")
        elif cell["known_issue"] and cell["verdict"] not in cell["expected"]:
            assert case.find("skipped").get("type") == "known_issue"
        else:
            assert case.find("failure") is None and case.find("skipped") is None
    unexpected = sum(not c["ok"] for c in results["cells"])
    assert int(root.get("failures")) + int(root.get("errors")) == unexpected
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert props["matrix"] == "default" and props["driver"] == "inprocess"


def test_junit_failure_carries_offset_and_command(results):
    root = build_junit(results)
    case = next(c for c in root.iter("testcase")
                if c.get("name") == "0.14/pc->new/pc-0.14[ide-bus-error]")
    failure = case.find("failure")
    assert "offset" in failure.get("message")
    assert "ide/bus[0]/error_status: source 4 destination 0" in failure.text
    assert "migmatrix save" in failure.text


def test_junit_escapes_hostile_and_control_characters(hostile, tmp_path):
    hostile["cells"][0]["detail"]["message"] = "bad byte \x00\x07 here"
    hostile["cells"][0]["ok"] = False
    path = write_junit(hostile, tmp_path / "junit.xml")
    text = path.read_text(encoding="utf-8")
    root = ET.parse(path).getroot()  # still well-formed XML
    assert "<script>" not in text
    names = [c.get("name") for c in root.iter("testcase")]
    assert any(HOSTILE[0] in n for n in names)
    assert "\\x00\\x07" in text


def test_write_reports_writes_three_files(results, tmp_path):
    paths = write_reports(results, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"results.json", "junit.xml", "index.html"}
    assert load_results(paths["results"])["cells"] == results["cells"]
    paths = write_reports(results, tmp_path / "out2", results_json=False)
    assert "results" not in paths and not (tmp_path / "out2" / "results.json").exists()


def test_write_reports_validates_first(results, tmp_path):
    del results["cells"][0]["verdict"]
    with pytest.raises(ResultsError, match="missing key 'verdict'"):
        write_reports(results, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- shards


def test_shard_of_is_stable():
    # Fixed values: a change here would split CI jobs differently across versions.
    assert [shard_of(f"cell{i}", 3) for i in range(6)] == [
        shard_of(f"cell{i}", 3) for i in range(6)]
    assert shard_of("0.14/pc->new/pc[idle]", 1) == 1
    assert 1 <= shard_of("x", 7) <= 7


def test_shards_partition_the_cells(results):
    ids = [c["id"] for c in results["cells"]]
    parts = [shard_cells(ids, i, 3) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert all(parts)  # 135 cells: every shard gets some
    assert shard_cells(results["cells"], 2, 3) == [c for c in results["cells"] if c["id"] in parts[1]]


@pytest.mark.parametrize(("index", "count"), [(0, 3), (4, 3), (1, 0)])
def test_shard_cells_rejects_bad_index(index, count):
    with pytest.raises(ValueError):
        shard_cells([], index, count)


def test_three_shards_merge_to_the_single_run(results):
    shards = [shard_run(results, i, 3) for i in (3, 1, 2)]  # any order
    merged, problems = merge_results(shards, names=["c.json", "a.json", "b.json"])
    assert problems == []
    assert without_timing(merged) == without_timing(results)
    assert [c["id"] for c in merged["cells"]] == [c["id"] for c in results["cells"]]
    assert merged["shard"] is None
    assert merged["started"] == "2024-05-14T09:31:00+00:00"
    assert merged["finished"] == "2024-05-14T09:33:20+00:00"
    assert merged["summary"] == results["summary"]
    junit = build_junit(merged)
    assert len(list(junit.iter("testcase"))) == len(results["cells"])


def test_merge_reports_duplicates_and_missing(results):
    one, two, three = (shard_run(results, i, 3) for i in (1, 2, 3))
    dup = copy.deepcopy(one["cells"][0])
    two["cells"].append(dup)
    merged, problems = merge_results([one, two], names=["one.json", "two.json"])
    kinds = [p["kind"] for p in problems]
    assert kinds.count("duplicate") == 1
    assert any(p["cell"] == dup["id"] and "one.json" in p["message"] for p in problems)
    assert "missing_shard" in kinds
    missing = next(p for p in problems if p["kind"] == "missing")
    assert f"{len(three['cells'])} of {len(results['cells'])} cells missing" in missing["message"]
    assert len(merged["cells"]) == len(one["cells"]) + len(two["cells"]) - 1
    assert merged["merge"]["problems"] == problems
    assert "Merge problems" in render_html(merged)


def test_merge_names_missing_ids_when_given(results):
    one, two = (shard_run(results, i, 3) for i in (1, 2))
    _, problems = merge_results([one, two], expected_ids=[c["id"] for c in results["cells"]])
    missing = {p["cell"] for p in problems if p["kind"] == "missing"}
    assert missing == {c["id"] for c in shard_cells(results["cells"], 3, 3)}


def test_merge_refuses_shards_of_different_matrices(results):
    one, two = shard_run(results, 1, 2), shard_run(results, 2, 2)
    two["matrix"] = "history"
    with pytest.raises(ResultsError, match="b.json: matrix 'history' differs"):
        merge_results([one, two], names=["a.json", "b.json"])
    two["matrix"] = "default"
    two["total_cells"] = 10
    with pytest.raises(ResultsError, match="total_cells"):
        merge_results([one, two], names=["a.json", "b.json"])


def test_merge_flags_interrupted_shard(results):
    one, two = shard_run(results, 1, 2), shard_run(results, 2, 2)
    two["finished"] = None
    merged, problems = merge_results([one, two])
    assert merged["finished"] is None
    assert [p["kind"] for p in problems] == ["interrupted"]


# --------------------------------------------------------------------------- baseline


def test_baseline_diff_categories(results):
    baseline = copy.deepcopy(results)
    by_id = {c["id"]: c for c in baseline["cells"]}
    # fixed: the corrupted cell used to be... still corrupted; make another one fail before
    fixed_id = "0.14/pc->0.14/pc[idle]"
    by_id[fixed_id].update(verdict="crashed", ok=False)
    # new unexpected: the crashed rtl8139 cell passed in the baseline
    new_id = "new/pc-0.14->0.14/pc[rtl8139-rx]"
    by_id[new_id].update(verdict="pass", ok=True)
    # removed from baseline -> added now; and a baseline-only cell
    added_id = "new/pc->new/pc[idle]"
    baseline["cells"] = [c for c in baseline["cells"] if c["id"] != added_id]
    gone = copy.deepcopy(by_id["0.14/pc->0.14/pc[ide-pio]"])
    gone["id"] = "0.13/pc->0.14/pc[ide-pio]"
    baseline["cells"].append(gone)

    diff = diff_against_baseline(results, baseline)
    ids = {k: [e["id"] for e in diff[k]] for k in ("changed", "new_unexpected", "fixed",
                                                   "added", "removed")}
    assert ids["fixed"] == [fixed_id]
    assert ids["new_unexpected"] == [new_id]
    assert set(ids["changed"]) == {fixed_id, new_id}
    assert ids["added"] == [added_id]
    assert ids["removed"] == [gone["id"]]
    entry = diff["new_unexpected"][0]
    assert entry["before"]["verdict"] == "pass" and entry["after"]["verdict"] == "crashed"

    page = render_html(results, baseline=baseline)
    top = page[: page.index('id="unexpected"')]
    assert 'id="baseline"' in top
    assert html.escape(new_id) in top and html.escape(fixed_id) in top


def test_no_baseline_section_without_baseline(results):
    assert 'id="baseline"' not in render_html(results)


# --------------------------------------------------------------------------- CI examples


@pytest.mark.parametrize("name", ["gitlab-ci.yml", "github-actions.yml"])
def test_ci_examples_shard_and_merge(name):
    text = (REPO / "ci" / name).read_text()
    assert "migmatrix run --shard" in text
    assert "migmatrix report --merge" in text
    assert "junit" in text.lower()
    try:
        import yaml
    except ImportError:
        return
    assert isinstance(yaml.safe_load(text), dict)


def test_gitlab_example_uses_parallel_and_junit_artifact():
    import importlib.util

    text = (REPO / "ci" / "gitlab-ci.yml").read_text()
    assert "parallel:" in text
    assert "--shard ${CI_NODE_INDEX}/${CI_NODE_TOTAL}" in text
    if importlib.util.find_spec("yaml"):
        import yaml

        doc = yaml.safe_load(text)
        merge = next(j for j in doc.values() if isinstance(j, dict)
                     and "report --merge" in " ".join(j.get("script", [])))
        assert merge["artifacts"]["reports"]["junit"] == "reports/junit.xml"


def test_prediction_beside_each_cell_and_disagreements_highlighted(results):
    res = copy.deepcopy(results)
    agree, disagree = res["cells"][0], res["cells"][1]
    agree["prediction"] = {"verdicts": [agree["verdict"]], "reason": "as the diff says"}
    other = "pass" if disagree["verdict"] != "pass" else "rejected"
    disagree["prediction"] = {"verdicts": [other], "reason": "nothing <b>misread</b> is sent"}
    page = render_html(res)
    assert "predicted " + agree["verdict"] in page
    assert 'id="mispredicted"' in page and "Prediction disagreements (1 of 2 predicted)" in page
    assert "≠ predicted" in page
    assert "nothing &lt;b&gt;misread&lt;/b&gt; is sent" in page and "<b>misread" not in page
    # Without predictions the report is unchanged: no section, no flags.
    plain = render_html(results)
    assert 'id="mispredicted"' not in plain and "≠ predicted" not in plain


def _with_real_twin(results: dict, model_id: str, verdict: str, *, historic: str = "both"
                    ) -> dict:
    """A copy of the model cell ``model_id`` as a cell with real historic sides."""
    cell = copy.deepcopy(next(c for c in results["cells"] if c["id"] == model_id))
    sides = ("source", "destination") if historic == "both" else (historic,)
    for side in sides:
        cell[side]["endpoint"] = "qemu-" + cell[side].get(
            "endpoint", f"{cell[side]['release']}/{cell[side]['machine']}")
        cell[side]["historic"] = True
        cell[side]["kind"] = "qemu"
    src, dst = cell["source"].get("endpoint"), cell["destination"].get("endpoint")
    src = src or f"{cell['source']['release']}/{cell['source']['machine']}"
    dst = dst or f"{cell['destination']['release']}/{cell['destination']['machine']}"
    cell["id"] = f"{src}->{dst}{model_id[model_id.index('['):]}"
    cell["verdict"] = verdict
    return cell


def test_real_cells_are_paired_with_their_model_cells(results):
    """The summary and the report line each real cell up with the all-model cell of the
    same pair and scenario, and flag every disagreement."""
    model = next(c for c in results["cells"] if c["verdict"] == "pass")
    agree = _with_real_twin(results, model["id"], "pass")
    differ = _with_real_twin(results, model["id"], "truncated", historic="destination")
    results["cells"] += [agree, differ]
    results["summary"] = summarize(results["cells"])
    pairs = results["summary"]["model_vs_real"]
    assert (pairs["pairs"], pairs["agree"]) == (2, 1)
    assert pairs["disagreements"] == [{
        "cell": differ["id"], "model": model["id"], "verdict": "truncated",
        "model_verdict": "pass", "agrees": False}]
    page = render_html(results)
    section = page[page.index('id="model-vs-real"'):page.index("</section>",
                                                                 page.index('id="model-vs-real"'))]
    assert "1 of 2 agree" in section
    assert differ["id"] in html.unescape(section) and "real loader, model stream" in section
    assert agree["id"] not in html.unescape(section)  # agreements are counted, not listed
    # The model cell's grid entry shows both real verdicts after its own.
    grid_cell = re.search(r'<td class="ocell[^"]*"[^>]*data-cell-id="'
                          + re.escape(html.escape(model["id"])) + r'".*?</td>', page, re.S)
    assert grid_cell is not None
    assert grid_cell.group(0).count('class="real') == 2
    assert grid_cell.group(0).count("real-disagrees") == 1


def test_a_run_without_real_cells_has_no_model_vs_real(results):
    assert "model_vs_real" not in results["summary"]
    assert 'id="model-vs-real"' not in render_html(results)


def test_a_large_report_keeps_routine_details_compressed_and_the_others_inline(
        tmp_path, monkeypatch):
    import base64
    import gzip
    import json as json_

    from harness.report import html
    from harness.report.sample import sample_results

    monkeypatch.setattr(html, "LAZY_FROM", 2)
    results = sample_results()
    page = html.render_html(results)
    block = re.search(r'id="lazy-details"[^>]*>([^<]*)</script>', page)
    assert block is not None
    details = json_.loads(gzip.decompress(base64.b64decode(block.group(1))))
    routine = [c for c in results["cells"] if c["ok"] and not c.get("known_issue")
               and not c.get("unexpected_pass") and c["verdict"] != "pass"]
    assert sorted(details) == sorted(html.cell_anchor(c["id"]) for c in routine)
    for c in routine:  # a stub in the page, the full section in the block
        anchor = html.cell_anchor(c["id"])
        assert f'id="{anchor}"' in page and "Reproduce" in details[anchor]
    unexpected = next(c for c in results["cells"] if not c["ok"])
    assert html.cell_anchor(unexpected["id"]) not in details
    full = re.search(rf'<section class="detail bad" id="{html.cell_anchor(unexpected["id"])}"'
                     r'.*?</section>', page, re.S)
    assert full is not None and "Reproduce" in full.group(0)
    assert 'id="lazy-details"' not in html.render_html({**results, "cells": results["cells"][:1]})


def test_a_template_cache_that_cannot_be_written_never_costs_the_report(tmp_path, monkeypatch):
    import jinja2

    from harness.report import html
    from harness.report.sample import sample_results

    def refuse(self, bucket):
        raise PermissionError("read-only cache")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(jinja2.FileSystemBytecodeCache, "dump_bytecode", refuse)
    monkeypatch.setattr(jinja2.FileSystemBytecodeCache, "load_bytecode", refuse)
    monkeypatch.setattr(html, "_env", None)  # a fresh environment with that cache
    page = html.render_html(sample_results())
    assert page.startswith("<!DOCTYPE html>") and 'id="grid"' in page
    monkeypatch.setattr(html, "_env", None)
