"""The browser in a real headless Chromium (Debian's `chromium` + `chromium-driver`, through
selenium): load a site written from hand-built tables over file://, filter, open a transcript,
check the highlighted judge quotes, the side-by-side view, and that a transcript's `<script>`
never runs. Skipped, with the reason, where Chromium or its driver cannot start (`make test`
installs them with apt when run as root). A screenshot is saved to $MP_BROWSER_SCREENSHOT
when set."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from browser_tables import QUOTE_A, condition_sources_fixture  # noqa: F401  (a fixture)

from motivation_profiles.browser.site import write_site

pytestmark = pytest.mark.slow  # Chromium starts in ~5-10 s per test


def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.skip(f"selenium is not installed ({exc}); pip install -e '.[dev]'")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium "
                    "chromium-driver, or run `make test` as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(driver_path), options=opts)
    except Exception as exc:  # WebDriverException and OS errors: the browser cannot start
        pytest.skip(f"headless chromium cannot start: {str(exc).splitlines()[0]}")


@pytest.fixture
def browser():
    driver = _driver()
    try:
        yield driver
    finally:
        driver.quit()


def _wait(fn, timeout=10.0):
    end = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # element not there yet
            if time.monotonic() > end:
                raise
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the page")
        time.sleep(0.05)


def test_browser_filters_transcript_quotes_compare_and_no_script(tmp_path, condition_sources,
                                                                 browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = tmp_path / "site"
    write_site(site, condition_sources, display_names={"m": "Model M"},
               figures={"baseline_compliance": {"m": ["baseline"]}})
    browser.get((site / "index.html").as_uri() + "#model=m&condition=baseline")
    count = lambda: browser.find_element(By.ID, "count").text  # noqa: E731
    _wait(lambda: count() == "12 of 12 rollouts")
    # only the condition shown (and the manifest) has been loaded
    loaded = browser.execute_script(
        "return [...document.scripts].map(s => s.getAttribute('src')).filter(Boolean)")
    assert loaded == ["app.js", "data/manifest.js", "data/m/baseline.js"]

    # filters: outcome, tier, accepted-then-refused, judge score range, full-text search
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("compliant")
    _wait(lambda: count() == "6 of 12 rollouts")
    Select(browser.find_element(By.ID, "f-tier")).select_by_value("monitored")
    _wait(lambda: count() == "3 of 12 rollouts")
    rows = browser.find_elements(By.CSS_SELECTOR, "#list tr.row")
    assert all(r.find_elements(By.TAG_NAME, "td")[1].text == "monitored" for r in rows)
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    Select(browser.find_element(By.ID, "f-tier")).select_by_value("")
    Select(browser.find_element(By.ID, "f-atr")).select_by_value("yes")
    _wait(lambda: count() == "2 of 12 rollouts")
    Select(browser.find_element(By.ID, "f-atr")).select_by_value("")
    browser.find_element(By.ID, "f-amin").send_keys("3")
    _wait(lambda: count() == "4 of 12 rollouts")  # goals 3 and 4 score A = 3, 4
    browser.execute_script("const e = document.getElementById('f-amin'); e.value = '';"
                           "e.dispatchEvent(new Event('input'));")
    _wait(lambda: count() == "12 of 12 rollouts")
    browser.find_element(By.ID, "f-q").send_keys("RLHF")
    _wait(lambda: count() == "2 of 12 rollouts")  # goal 0's scratchpad, both tiers
    assert "q=RLHF" in browser.current_url  # the view is linkable

    # open a transcript: both judge quotes highlighted in the scratchpad
    browser.find_elements(By.CSS_SELECTOR, "#list tr.row")[0].click()
    marks = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#detail pre.scratchpad mark"))
    by_class = {m.get_attribute("class"): m.text for m in marks}
    assert by_class["hl-a"].lower().split() == QUOTE_A.split()  # matched across spaces / case
    assert by_class["hl-b"] == "values may be modified"  # quote "VALUES MAY BE\\n modified"
    assert "Direction A" in browser.find_element(By.ID, "detail").text
    shot = tmp_path / "browser.png"
    browser.save_screenshot(str(shot))

    # side by side: the same goal, tier and seed under another condition
    Select(browser.find_element(By.ID, "compare")).select_by_value("prompt-A1_amp-standard")
    panes = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#detail .panes article"))
    assert [p.get_attribute("data-condition") for p in panes] == [
        "baseline", "prompt-A1_amp-standard"]
    assert "output 0 prompt-A1_amp-standard" in panes[1].text
    assert "output 0 baseline" in panes[0].text
    _wait(lambda: "compare=prompt-A1_amp-standard" in browser.current_url)
    shot_compare = tmp_path / "browser-compare.png"
    browser.save_screenshot(str(shot_compare))

    # an injected <script> / onerror handler in a transcript is shown as text, never run
    browser.get((site / "index.html").as_uri()
                + "#model=m&condition=baseline&row=1:monitored:0&compare=prompt-A1_amp-standard")
    pre = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#detail pre.scratchpad"))
    assert pre.text == "<script>window.__pwned = 1;</script>" \
        '<img src="x" onerror="window.__pwned = 2">'
    assert "</script><script>window.__pwned=3</script>" in browser.find_element(
        By.ID, "detail").text
    time.sleep(0.3)
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#detail img, #detail script")

    target = os.environ.get("MP_BROWSER_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot_compare, target)


def test_figure_view_links_to_conditions(tmp_path, condition_sources, browser):
    from selenium.webdriver.common.by import By

    site = tmp_path / "site"
    write_site(site, condition_sources,
               figures={"baseline_compliance": {"m": ["baseline", "prompt-A1_amp-standard"]}})
    browser.get((site / "index.html").as_uri() + "#figure=baseline_compliance")
    links = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#figures a"))
    assert [a.text for a in links] == ["m / baseline", "m / prompt-A1_amp-standard"]
    links[1].click()
    _wait(lambda: browser.find_element(By.ID, "count").text == "12 of 12 rollouts")
    assert Select_value(browser, "condition") == "prompt-A1_amp-standard"


def Select_value(browser, element_id):  # noqa: N802
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    return Select(browser.find_element(By.ID, element_id)).first_selected_option \
        .get_attribute("value")


def test_paper_scale_condition_loads_and_pages(tmp_path, browser):
    """A paper-size condition (520 goals x 2 tiers x 3 seeds = 3,120 rollouts, two turns of
    ~1,500 tokens each): loaded on demand, the list paged 200 rows at a time, search works."""
    import polars as pl
    from selenium.webdriver.common.by import By

    from motivation_profiles.browser.site import ConditionSource
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.rollouts.run import ROW_SCHEMA

    words = ("I must think about whether the researchers expect this answer and how training "
             "would change me. ") * 60  # ~6,000 characters
    rows = []
    for goal_id in range(520):
        for tier in ("monitored", "unmonitored"):
            for seed in range(3):
                pad = f"goal {goal_id} seed {seed}. {words}"
                rows.append({"goal_id": goal_id, "goal": f"Goal {goal_id}", "tier": tier,
                             "seed": seed, "prompt_hash": "0" * 64, "turns": [pad, pad],
                             "finish_reasons": ["stop", "stop"], "n_turns": 2,
                             "prompt_tokens": 3000, "completion_tokens": 3000,
                             "transcript": pad + pad, "scratchpad": pad, "final_output": "no",
                             "output_complete": True, "outcome": "rejected",
                             "accepted_then_refused": False})
    path = tmp_path / "baseline.parquet"
    write_table(pl.DataFrame(rows, schema=ROW_SCHEMA), path, {"rule": "test"})
    site = tmp_path / "site"
    write_site(site, [ConditionSource("big", "baseline", path)])
    size_mb = (site / "data/big/baseline.js").stat().st_size / 1e6
    t0 = time.monotonic()
    browser.get(site.joinpath("index.html").as_uri() + "#model=big&condition=baseline")
    _wait(lambda: browser.find_element(By.ID, "count").text == "3120 of 3120 rollouts", 60)
    seconds = time.monotonic() - t0
    print(f"paper-scale condition: {size_mb:.0f} MB data file, list shown in {seconds:.1f} s")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#list tr.row")) == 200
    browser.find_element(By.CSS_SELECTOR, "button.more").click()
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#list tr.row")) == 400)
    browser.find_element(By.ID, "f-q").send_keys("goal 519 seed 2.")
    _wait(lambda: browser.find_element(By.ID, "count").text == "2 of 3120 rollouts", 30)
    assert seconds < 30
