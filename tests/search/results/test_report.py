"""The report of a real multi-fidelity study, opened in a real browser (Debian's chromium, through selenium),
online and with the network off; its architecture diagrams; and the study in optuna-dashboard."""

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from search.cli import main as search_main
from search.results.report import IMPORTANCE_MIN, architecture_svg, default_fidelity, importances
from tests.search.conftest import SPACE, StderrLines, free_port

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def test_an_architecture_diagram_draws_every_branch_of_every_layer():
    layers = [
        [[["conv_block", {"in_chan": 32, "out_chan": 48, "kernel": 5, "stride": 2}]]],
        [
            [
                ["separable_conv_block", {"out_chan": 48, "kernel": 7, "dil": 2}],
                ["conv_block", {"out_chan": 96, "kernel": 3, "k": 2}],
            ],
            [["attention_conv_block", {"kernel": 3, "n_heads": 4}]],
        ],
    ]
    svg = architecture_svg(json.dumps({"model": {"layers": layers}}))
    assert svg.startswith("<svg") and svg.count("<rect") == 4  # one box per branch
    for text in ("layer 0", "32→48, stride 2", "separable_conv k7 d2", "conv k3 GLU", "attention_conv k3 h4"):
        assert text in svg, text


def test_importances_are_withheld_below_ten_candidates_at_one_fidelity(tmp_path):
    import pandas as pd

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="few")
    for i in range(IMPORTANCE_MIN - 1):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": float(i)},
                distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
                value=0.5,
                user_attrs={"history": {"dev_wer": [0.9, 0.5]}, "epochs": 2},
            )
        )
    df = pd.DataFrame({"study": "few", "candidate": range(9), "trial": range(9), "dev_wer": 0.5, "epochs": 2})
    fig, why = importances(study, df)
    assert fig is None and "need at least 10 candidates scored at one fidelity; the most here is 9" in why
    assert default_fidelity({0.33: {1: 0.9, 2: 0.9, 3: 1.0}, 1.0: {1: 0.8, 2: 0.7}, 3.0: {1: 0.5}}) == 0.33
    assert default_fidelity({1.0: dict.fromkeys(range(3), 0.5), 3.0: dict.fromkeys(range(3), 0.4)}) == 3.0


@pytest.fixture(scope="module")
def study_report(tiny_corpus, tmp_path_factory):
    """A small real ASHA study (8 candidates: paused ones, promoted ones, one trained in full) and its report."""
    work = tmp_path_factory.mktemp("report")
    shutil.copytree(tiny_corpus, work / "data")
    (work / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 3"))
    storage = f"sqlite:///{work}/studies.db"
    where = ["--space", str(work / "space.yaml"), "--data", str(work / "data"), "--storage", storage]
    assert search_main(["launch", *where, "--study", "r", "--trials", "8", "--seed", "0"]) == 0
    trials = optuna.load_study(study_name="r", storage=storage).trials
    statuses = [t.user_attrs.get("status") for t in trials]
    assert statuses.count("paused") >= 1 and any("continues" in t.user_attrs for t in trials), statuses
    assert search_main(["compare", "r", "--storage", storage, "--out", str(work / "report")]) == 0
    return work, storage, work / "report" / "report.html"


def _browser(offline: bool):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    if offline:  # nothing but the file itself can load: no proxy answers, no name resolves
        options.add_argument("--proxy-server=127.0.0.1:9")
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(DRIVER)), options=options)


@pytest.mark.slow
@pytest.mark.parametrize("offline", [False, True], ids=["online", "network-off"])
def test_the_report_renders_in_a_real_browser_and_its_leaderboard_sorts(study_report, offline, tmp_path):
    from selenium.webdriver.common.by import By

    work, _, page = study_report
    browser = _browser(offline)
    try:
        browser.get(page.as_uri())
        plots = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        assert len(plots) >= 2  # learning curves and the Pareto front (importances need 10 candidates)
        for plot in plots:  # drawn: an SVG with points in it
            assert plot.find_elements(By.CSS_SELECTOR, "svg.main-svg")
            assert plot.find_elements(By.CSS_SELECTOR, ".scatterlayer .point, .barlayer .point")
        assert browser.find_elements(By.CSS_SELECTOR, ".arch svg rect")  # an architecture diagram
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
        header = next(th for th in browser.find_elements(By.CSS_SELECTOR, "#board th") if th.text == "dev WER")
        column = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#board th")].index("dev WER")

        def shown():
            rows = browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")
            return [float(r.find_elements(By.TAG_NAME, "td")[column].text.rstrip("%")) for r in rows]

        header.click()  # descending first? no: ascending, then descending
        assert shown()[0] == min(shown()) and shown() == sorted(shown())
        header.click()
        assert shown() == sorted(shown(), reverse=True)
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, min(height, 6000))
        shot = Path("results") / f"report-{'offline' if offline else 'online'}.png"
        shot.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        browser.quit()


@pytest.mark.slow
def test_the_dashboard_serves_the_study_and_its_user_attributes(study_report):
    pytest.importorskip("optuna_dashboard")
    work, storage, _ = study_report
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "dashboard", "--study", "r", "--storage", storage, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = StderrLines(proc, "optuna-dashboard for study 'r'")  # printed once the port is bound
    try:
        assert lines.seen.wait(60), lines.lines
        first = lines.lines[0]
        assert first.startswith(f"optuna-dashboard for study 'r': http://127.0.0.1:{port}/dashboard/studies/"), first
        studies = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30))
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "r"
        url = f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}"
        detail = json.load(urllib.request.urlopen(url, timeout=30))
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in detail["trials"]]
        assert all("config" in a and "status" in a for a in attrs)
        assert any("dev_wer" in a for a in attrs) and json.loads(attrs[0]["config"])["model"]["layers"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        lines.text()
