"""`tuner ui` checked in a real browser: the study's runs and the parent run's `plots` artifacts show up.

Needs Chromium and chromedriver (`.ci/install-browser`); without them the test fails, never skips,
so a CI image that lost the browser is noticed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_study import make_tiny_study

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
SHOT_COPY = Path("/tmp/dash/ui.png")
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tuner ui exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"tuner ui did not answer on {url} within 120 s:\n{log.read_text()[-3000:]}")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: run `apt-get install -y chromium chromium-driver` "
                    "(or .ci/install-browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.mark.slow
def test_mlflow_ui_shows_the_study_runs_and_plots(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    tiny = make_tiny_study(tmp_path / "stores")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tiny.tracking_uri)
    experiment_id = client.get_experiment_by_name(tiny.name).experiment_id
    parent_id = next(r.info.run_id for r in client.search_runs([experiment_id])
                     if r.data.tags.get("tuner.role") == "study")

    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "tuner", "ui", "--port", str(port),
                                   "--tracking-uri", tiny.tracking_uri, "--storage", tiny.storage],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(base + "/health", server, log)
        driver = browser()
        wait = WebDriverWait(driver, WAIT_S)

        # MLflow 3.17 opens an experiment on its GenAI overview whatever the experiment's tags say (its
        # mlflow.experimentKind is ignored); one click on the "Model training" switch shows the runs
        # table, and the browser remembers it for the plain experiment address.
        study_link = (By.XPATH, f"//a[contains(@href, '/runs/{parent_id}')][normalize-space()='{tiny.name}']")
        driver.get(f"{base}/#/experiments/{experiment_id}")
        switch = wait.until(seen.presence_of_element_located((By.XPATH, "(//*[normalize-space()='Model training'])[last()]")))
        driver.execute_script("arguments[0].click()", switch)  # a GenAI tip may cover it
        wait.until(seen.element_to_be_clickable(study_link))
        driver.get(f"{base}/#/experiments/{experiment_id}")
        parent = wait.until(seen.element_to_be_clickable(study_link))
        assert "workflowType=machine_learning" in driver.current_url
        # Trials are nested under the study's run: expand it and the child runs appear.
        parent.find_element(By.XPATH, "./ancestor::div[@role='gridcell'][1]//button").click()
        wait.until(seen.presence_of_element_located((By.XPATH, "//*[normalize-space()='trial-000 ' or "
                                                               "starts-with(normalize-space(), 'trial-000')]")))
        driver.save_screenshot(str(tmp_path / "runs.png"))

        # The parent run's artifacts list the plots folder; open it and preview the history plot.
        driver.get(f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts?workflowType=machine_learning")
        folder = wait.until(seen.element_to_be_clickable((By.XPATH, "//*[normalize-space()='plots']")))
        assert driver.find_elements(By.XPATH, "//*[normalize-space()='report.html' or normalize-space()='study.yaml']")
        folder.click()
        wait.until(seen.element_to_be_clickable((By.XPATH, "//*[normalize-space()='history.png']"))).click()
        wait.until(seen.presence_of_element_located((By.XPATH, "//*[normalize-space()='plots/history.png']")))
        wait.until(lambda d: any(i.get_attribute("src").startswith("blob:") and i.size["width"] > 200
                                 for i in d.find_elements(By.TAG_NAME, "img")))  # the PNG preview
        time.sleep(1)  # let the preview finish painting before the screenshot
        shot = tmp_path / "ui.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        SHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "runs.png", SHOT_COPY.with_name("ui-runs.png"))
        shutil.copy(shot, SHOT_COPY)
    finally:
        if driver is not None:
            driver.quit()
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """Stop tuner ui with mlflow and uvicorn under it: they share the process group we started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=20)
            time.sleep(1)  # the children exit just after their parent
        except subprocess.TimeoutExpired:
            continue


def test_missing_browser_fails_and_names_the_install(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        browser()
