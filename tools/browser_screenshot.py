"""Screenshot one view of a transcript browser site with headless Chromium (selenium).

    python tools/browser_screenshot.py SITE_DIR OUT.png ["#model=M&condition=C&row=G:T:S"]

Opens ``SITE_DIR/index.html`` over file:// at the given view (default: the first model and
condition with its first rollout opened), waits for the view to render and saves a full-width
PNG. Needs Debian's ``chromium`` and ``chromium-driver`` and the dev extra's selenium.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    site, out = Path(argv[0]).resolve(), Path(argv[1])
    view = argv[2] if len(argv) == 3 else ""
    if not (site / "index.html").is_file():
        print(f"error: {site} has no index.html", file=sys.stderr)
        return 1
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"),
                              options=opts)
    try:
        driver.get(site.joinpath("index.html").as_uri() + view)
        end = time.monotonic() + 20
        while not driver.find_elements(By.CSS_SELECTOR, "#list tr.row"):
            if time.monotonic() > end:
                raise SystemExit("error: the page did not render a rollout list")
            time.sleep(0.1)
        if "row=" not in view:
            driver.find_elements(By.CSS_SELECTOR, "#list tr.row")[0].click()
        time.sleep(1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
