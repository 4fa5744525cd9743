"""The report and the leaderboard page in headless Chromium at 1,280 px: what decides the verdict is on screen.

Every cell of the gated-criteria table and of the leaderboard table must lie
inside the window and inside any scrolling box around it, so that nobody has
to scroll sideways to read a status, a score, a threshold or a verdict.
"""

from __future__ import annotations

import copy

import pytest

from pytest_analog import registry
from pytest_analog.leaderboard import Board
from pytest_analog.leaderboard.page import render_page
from pytest_analog.report import render_html
from tests.conftest import chromium
from tests.test_report import _criterion, _steering_section, make_report

WIDTH = 1280

pytestmark = pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (CI installs Debian's chromium package)")

# Boxes of the matched elements that stick out of the window or out of a scrolling or clipping ancestor.
_OVERFLOW_JS = """
elements => elements.flatMap(el => {
  const box = el.getBoundingClientRect(), out = [];
  if (box.right > window.innerWidth + 0.5) out.push(`${el.textContent.trim().slice(0, 60)}: right edge ${box.right} > window ${window.innerWidth}`);
  for (let up = el.parentElement; up; up = up.parentElement) {
    const style = getComputedStyle(up);
    if (style.overflowX !== "visible") {
      const clip = up.getBoundingClientRect();
      if (box.right > clip.right + 0.5) out.push(`${el.textContent.trim().slice(0, 60)}: right edge ${box.right} > its ${up.tagName}.${up.className} at ${clip.right}`);
    }
  }
  return out;
})
"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(path.as_uri())
    return page


def long_report():
    """The standard test report with the long ids, intervals and model paths of a real run."""
    report = make_report()
    for c in report["criteria"]:
        if c["metric"] == "cka":
            c.update(chance=0.05, chance_interval=[0.03, 0.08], interval=[c["value"] - 0.05, c["value"] + 0.04],
                     score="corrected", corrected=(c["value"] - 0.05) / 0.95,
                     corrected_interval=[(c["value"] - 0.1) / 0.95, (c["value"] - 0.01) / 0.95])
    report["criteria"] += [
        _criterion("steering", "transfer_ratio", 0.2812, 0.9, "min", name="test_transfer_ratio[sycophancy-layer10]"),
        _criterion("steering", "random_control", 0.1234, 0.25, "max", name="test_random_control[sycophancy-layer10]"),
        _criterion("benchmarks", "benchmark_retained", 0.1187, 0.5, "min", name="test_benchmark[analog_text_perplexity]"),
        _criterion("compliance", "parameter_fraction", 0.0498, 0.05, "max", name="test_parameter_fraction[max]"),
    ]
    for c in report["criteria"][-4:]:
        c["reason"] = "a long explanation of what was found and where it was looked for, " * 3
    report["models"]["analog"]["id"] = "/home/release-engineering/checkouts/analog-releases/2026-11/smollm2-135m-instruct-analog-5pct/release"
    report["steering"] = _steering_section(3)
    return report


def test_report_gated_criteria_fit_at_1280px(browser, tmp_path):
    path = tmp_path / "fidelity.html"
    path.write_text(render_html(long_report(), registry.built_in()))
    page = _open(browser, path)
    gated = page.locator("xpath=//h3[starts-with(., 'Gated criteria')]/following-sibling::div[1]//table")
    assert gated.locator("tr").count() > 40
    assert gated.locator("th, td").evaluate_all(_OVERFLOW_JS) == []
    assert page.locator(".banner").evaluate_all(_OVERFLOW_JS) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def test_leaderboard_scores_and_verdict_fit_at_1280px(browser, tmp_path):
    suites = ["representation", "embeddings", "logits", "steering", "benchmarks", "compliance"]
    entry = {
        "file": "submission.json",
        "teacher": "/srv/models/huggingface/hub/models--HuggingFaceTB--SmolLM2-1.7B-Instruct/snapshots/31b70e2e869a7173562077fd711b654946d38674",
        "analog": "/home/release-engineering/checkouts/analog-releases/2026-11/smollm2-1.7b-instruct-analog-5pct/release",
        "reference": "ef" * 32, "teacher_sha256": "ab" * 32, "analog_sha256": "cd" * 32, "parameter_fraction": 0.0498,
        "scores": {s: 0.4321 for s in suites}, "verdict": "fail", "passed": "13/25", "passed_fraction": 0.52,
        "date": "2026-11-30", "tool_version": "0.1.0",
    }
    entries = [dict(copy.deepcopy(entry), file=f"{i}.json") for i in range(3)]
    path = tmp_path / "index.html"
    path.write_text(render_page(Board(entries=entries)))
    page = _open(browser, path)
    assert page.locator("table.leaderboard tbody tr").count() == 3
    assert page.locator("section.group h2, table.leaderboard th, table.leaderboard td").evaluate_all(_OVERFLOW_JS) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
