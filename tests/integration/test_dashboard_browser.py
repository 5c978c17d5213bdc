"""The dashboard in a real browser (headless Chromium through Selenium): upload a PTB-XL record, read
the verdict, the lead-wise attention heat-map and the drawn leads; a bad upload shows its reason."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream.dashboard.app import create_dashboard
from stream.settings import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs chromium and chromedriver (Debian: chromium chromium-driver; .ci/run installs them)",
    ),
]
PTBXL = Path("ptbxl") / "records100" / "01000" / "01002_lr"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            create_dashboard(Settings()), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "dashboard did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2200",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, cond, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(cond)


def test_upload_shows_verdict_attention_and_leads(server, browser, data_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server)
    _wait(d, lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#model option")) == 3)
    Select(d.find_element(By.ID, "model")).select_by_value("vae_bilstm_mha")
    base = data_dir / PTBXL
    files = sorted(
        str(p.resolve()) for p in base.parent.glob(base.name + "*")
    )  # .hea and its signal files
    d.find_element(By.ID, "files").send_keys("\n".join(files))
    d.find_element(By.ID, "analyze").click()
    _wait(d, lambda drv: drv.find_element(By.ID, "result").is_displayed())

    assert d.find_element(By.ID, "model-name").text == "vae_bilstm_mha"
    assert d.find_element(By.ID, "record-name").text == "01002_lr"
    score = float(d.find_element(By.ID, "score").text)
    threshold = float(d.find_element(By.ID, "threshold").get_attribute("value"))
    verdict = d.find_element(By.ID, "verdict").text
    assert verdict == ("ANOMALOUS" if score > threshold else "normal")
    rows = d.find_elements(By.CSS_SELECTOR, ".lead-row")
    assert [r.get_attribute("data-lead") for r in rows] == [
        "I",
        "II",
        "III",
        "aVR",
        "aVL",
        "aVF",
        "V1",
        "V2",
        "V3",
        "V4",
        "V5",
        "V6",
    ]
    cells = d.find_elements(By.CSS_SELECTOR, "#attention .att-cell")
    weights = [float(c.text.split()[-1]) for c in cells]
    assert len(cells) == 12 and sum(weights) == pytest.approx(1.0, abs=0.01)
    assert all("score" in r.find_element(By.CSS_SELECTOR, ".lead-score").text for r in rows)
    # each lead's canvas holds the drawn traces (black original, red reconstruction) and the error bar
    inked = d.execute_script(
        "return [...document.querySelectorAll('.lead-row canvas')].map(c => {"
        " const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let black = 0, red = 0;"
        " for (let i = 0; i < px.length; i += 4) { if (px[i + 3] > 200 && px[i] < 60 && px[i + 1] < 60) black++;"
        " if (px[i + 3] > 200 && px[i] > 180 && px[i + 1] < 90) red++; } return [black, red]; });"
    )
    assert len(inked) == 12 and all(b > 100 and r > 100 for b, r in inked)

    # the threshold control re-decides on the same score
    box = d.find_element(By.ID, "threshold")
    for value, expected in ((score + 1.0, "normal"), (score - 1.0, "ANOMALOUS")):
        d.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
            box,
            str(value),
        )
        assert d.find_element(By.ID, "verdict").text == expected
    # leads can be hidden
    d.find_element(By.CSS_SELECTOR, "#lead-filter input[value='V1']").click()
    assert len(d.find_elements(By.CSS_SELECTOR, ".lead-row")) == 11

    # a bad upload is refused with its reason, shown on the page
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2000, 12), np.nan, dtype=np.float32))
    d.find_element(By.ID, "files").clear()
    d.find_element(By.ID, "files").send_keys(str(bad))
    d.find_element(By.ID, "analyze").click()
    _wait(d, lambda drv: "refused" in drv.find_element(By.ID, "error").text)
    assert "(nan)" in d.find_element(By.ID, "error").text
