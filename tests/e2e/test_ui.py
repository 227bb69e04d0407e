"""The Dagster UI as a user sees it, in a real (headless) Chromium.

``dagster dev`` runs on a free loopback port exactly as ``make ui`` starts it, with its own
temporary DAGSTER_HOME (a copy of ``dagster_home/dagster.yaml``), the ``test`` profile and a
domains file of one tiny domain. A backfill of ``domain_pipeline_job`` for that one partition is
launched through the GraphQL API and polled until its run succeeded; then Chromium (Debian's
``/usr/bin/chromium`` driven by its ``chromedriver``, nothing downloaded) opens the asset graph,
the partitions of ``filtered_dataset``, and the latest materialisation of each per-domain asset,
and the test checks that the funnel, the score plots (PNG data URIs that must actually decode:
``naturalWidth > 0``) and the preview tables are rendered.

Screenshots are kept under the test's tmp folder (their paths are printed); with
``REER_UI_SCREENSHOT_DIR`` set they are copied there too (how ``docs/ui-*.png`` were made).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.conftest import free_port, new_home, run_env, tiny_pieces, write_domains

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOMAIN = "tiny"
ITEMS = 4  # the shortest bundled pieces with a given request (no synthesis); some searches are rejected
LOCATION = "reer_assets.definitions"  # workspace.yaml's python_module
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,1000", "--hide-scrollbars"]
# the toy embedded model's thinkings repeat themselves; relaxed so the funnel has accepted rows
FILTER_CONFIG = {"max_top3_trigram_share": 1.0, "min_thinking_units": 5}

pytestmark = [pytest.mark.ui, pytest.mark.model, pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
                                        "chromium-driver; .ci/run installs them)")]


# --- dagster dev and its GraphQL API ------------------------------------------------------------------

class DagsterDev:
    def __init__(self, home: Path, env: dict[str, str], port: int, log_path: Path):
        self.home, self.env, self.port, self.log_path = home, env, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        handle = open(log_path, "wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
             "-w", "workspace.yaml"],
            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            # a shell's background job inherits SIGINT ignored; dagster dev must see Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        handle.close()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            out = json.loads(response.read())
        assert not out.get("errors"), out["errors"]
        return out["data"]

    def wait_until_loaded(self, timeout: float = 240) -> None:
        """The webserver answers and the code location is loaded (the daemon starts beside it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}"
            try:
                data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }",
                                    timeout=10)
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    assert not errors, errors
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)  # wait: a polling interval until the code location loads
        raise AssertionError(f"dagster dev not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT (Ctrl-C, what a user does), then SIGKILL of the group if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status } error { message } }
    ... on PythonError { message }
  }
}"""

RUN_FAILURE = """
query Run($id: ID!) {
  runOrError(runId: $id) { ... on Run { eventConnection(afterCursor: null) { events {
    __typename ... on MessageEvent { message } } } } }
}"""


def launch_domain_backfill(server: DagsterDev, partition: str, run_config: dict) -> str:
    params = {
        "selector": {"partitionSetName": "domain_pipeline_job_partition_set",
                     "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}},
        "partitionNames": [partition],
        "runConfigData": run_config,
        "title": f"ui test: {partition}",
    }
    result = server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def wait_for_backfill(server: DagsterDev, backfill_id: str, timeout: float = 900) -> dict:
    """Poll until every run of the backfill succeeded (the backfill's own status turns
    COMPLETED_SUCCESS a daemon tick, up to 30 s, later; not waited for)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = server.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert last["__typename"] == "PartitionBackfill", last
        runs = last["runs"]
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        if failed or last["status"] in ("FAILED", "CANCELED", "COMPLETED_FAILED"):
            events = server.graphql(RUN_FAILURE, {"id": failed[0]["runId"]})["runOrError"] if failed else {}
            messages = [e.get("message") for e in events.get("eventConnection", {}).get("events", [])][-15:]
            raise AssertionError(f"backfill {backfill_id} failed: {last}\n" + "\n".join(map(str, messages)))
        if runs and all(r["status"] == "SUCCESS" for r in runs):
            return last
        time.sleep(2.0)  # wait: a polling interval over the backfill status
    raise AssertionError(f"backfill {backfill_id} not done after {timeout}s: {last}\n{server.log_tail()}")


# --- the browser ------------------------------------------------------------------------------------

def chromium(user_data_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(driver, predicate, timeout: float = 60, what: str = "", screenshot: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception:  # stale elements while React re-renders
            pass
        if time.monotonic() > deadline:
            if screenshot is not None:
                driver.save_screenshot(str(screenshot))
            raise AssertionError(f"timed out waiting for {what} on {driver.current_url}"
                                 + (f" (screenshot {screenshot})" if screenshot else ""))
        time.sleep(0.25)  # wait: a polling interval over the page


def page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def no_community_dialog(driver) -> bool:
    return "Join the Dagster community" not in page_text(driver)


def loaded_images(driver) -> list[dict]:
    """The embedded PNG plots in the page, with whether each decoded (naturalWidth > 0)."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('img'))
          .filter(img => img.src.startsWith('data:image/png;base64,'))
          .map(img => ({alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
    """)


# --- the test --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ui(tmp_path_factory, embedded_path, scorer_path):
    root = tmp_path_factory.mktemp("ui")
    domains_file = write_domains(root / "domains", tiny_pieces(ITEMS))
    home = new_home(root, "dagster_home")
    env = run_env(home, domains_file)
    server = DagsterDev(home, env, free_port(), root / "dagster-dev.log")
    started = time.monotonic()
    try:
        server.wait_until_loaded()
        server.graphql("mutation { setNuxSeen }")  # the "Join the Dagster community" dialog stays closed
        ready = time.monotonic()
        backfill_id = launch_domain_backfill(
            server, DOMAIN, {"ops": {"filtered_dataset": {"config": FILTER_CONFIG}}})
        backfill = wait_for_backfill(server, backfill_id)
        done = time.monotonic()
        print(f"\n[ui] dagster dev ready in {ready - started:.1f}s, backfill {backfill_id} "
              f"succeeded in {done - ready:.1f}s (runs {[r['runId'] for r in backfill['runs']]})")
        yield {"server": server, "root": root, "backfill": backfill_id}
    finally:
        server.stop()


def show_markdown(driver, key: str):
    """Open the [Show Markdown] dialog of metadata entry ``key`` (long markdown, such as an embedded
    PNG, is shown in a dialog rather than inline); the dialog element."""
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.XPATH, f"//tr[td[normalize-space()='{key}']]")
    row.find_element(By.XPATH, ".//a[contains(normalize-space(), 'Show Markdown')]").click()
    dialog = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "[role=dialog]"), 10, f"the {key} dialog")
    wait_for(driver, settled, 10, f"the {key} dialog to finish fading in")
    return dialog


def settled(driver) -> bool:
    """No overlay transition running (a screenshot mid-fade shows the page through the dialog)."""
    return driver.execute_script("""
        if (document.querySelector('[class*="-enter-active"], [class*="-appear-active"], [class*="-exit-active"]'))
          return false;
        return Array.from(document.querySelectorAll('[role=dialog]'))
          .every(d => getComputedStyle(d).opacity === '1' && getComputedStyle(d.parentElement).opacity === '1');
    """)


def close_dialog(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Close']").click()
    wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=dialog]") and settled(d), 10,
             "the dialog to close")


def test_ui_shows_graph_partitions_funnel_plots_and_preview(ui, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = ui["server"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    saved: list[Path] = []

    def shot(name: str) -> Path:
        wait_for(driver, no_community_dialog, 10, "the onboarding dialog to stay closed")
        wait_for(driver, settled, 10, "the page to settle")
        path = shots / f"{name}.png"
        driver.save_screenshot(str(path))
        saved.append(path)
        return path

    def metadata_text(key: str) -> str:
        return driver.find_element(By.XPATH, f"//tr[td[normalize-space()='{key}']]/td[2]").text

    def metadata_table(key: str) -> str:
        """A table's cell, once rendered: it can still be empty when its row's key is on the page (a
        profiled, loaded run met that for reject_reasons)."""
        return wait_for(driver, lambda d: metadata_text(key).strip(), 30, f"the {key} table",
                        shots / f"{key}-timeout.png")

    started = time.monotonic()
    driver = chromium(tmp_path / "chromium-profile")
    try:
        # the asset graph, every group expanded (the UI's own shortcut, Alt+E)
        driver.get(f"{server.url}/asset-groups")
        wait_for(driver, lambda d: "refinement" in page_text(d) and "training" in page_text(d), 90,
                 "the asset graph", shots / "graph-timeout.png")
        for toggle in driver.find_elements(By.XPATH, "//input[starts-with(@placeholder, 'Jump to')]/following::button[1]"):
            toggle.click()  # the group list beside the graph folds away: more room for the graph
        names = ["raw_documents", "filtered_dataset", "sft_dataset", "base_model", "benchmark_scores"]

        def expanded(d) -> bool:
            return all(n in page_text(d) for n in names)

        # a loaded machine may still be wiring the graph's key handler when the page first renders: press
        # the shortcut again (after a check) until every group is open
        for attempt in range(6):
            driver.find_element(By.TAG_NAME, "body").click()
            ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
            try:
                wait_for(driver, expanded, 8, "the expanded asset graph")
                break
            except AssertionError:
                if attempt == 5:
                    driver.save_screenshot(str(shots / "graph-timeout.png"))
                    raise
        time.sleep(1.0)  # wait: the layout animates into place; no DOM event marks the end of the animation
        shot("asset-graph")

        # a partitioned asset's partition view: the domain, materialised, with the funnel and the preview
        driver.get(f"{server.url}/assets/filtered_dataset?view=partitions&partition={DOMAIN}")
        wait_for(driver, lambda d: "reject_reasons" in page_text(d) and "Materialized" in page_text(d), 60,
                 "the partition view of filtered_dataset", shots / "partitions-timeout.png")
        text = page_text(driver)
        assert "Materialized (1)" in text and "domain_pipeline_job" in text, text[:3000]
        accepted, rejected = int(metadata_text("accepted")), int(metadata_text("rejected"))
        assert accepted >= 1 and accepted + rejected == int(metadata_text("dagster/row_count")) == ITEMS
        if rejected:  # a table: a header and one row per reason kind, the counts adding up
            reasons = metadata_table("reject_reasons")
            rows = [line.split() for line in reasons.splitlines()[1:] if line.strip()]
            assert reasons.split()[:2] == ["reason", "count"] and sum(int(r[-1]) for r in rows) >= rejected, reasons
        preview = metadata_table("preview")
        assert "document_id" in preview and "accepted" in preview and "doc_" in preview, preview
        shot("filtered_dataset-partition")

        # refined_trajectories' materialisation: the two plots decode, the preview is a table
        driver.get(f"{server.url}/assets/refined_trajectories?view=partitions&partition={DOMAIN}")
        wait_for(driver, lambda d: "score_plot" in page_text(d) and "gain_plot" in page_text(d), 60,
                 "refined_trajectories' metadata", shots / "refined-timeout.png")
        preview = metadata_table("preview")
        assert "final_thinking" in preview and "initial_score" in preview and "doc_" in preview, preview
        assert "segment position" in metadata_text("gain_by_position")
        for key, alt in (("score_plot", "initial vs final score"), ("gain_plot", "gain per segment position")):
            show_markdown(driver, key)
            images = wait_for(driver, lambda d: [i for i in loaded_images(d) if i["complete"]], 20,
                              f"the {key} image", shots / f"{key}-timeout.png")
            assert [i["alt"] for i in images] == [alt], images
            assert images[0]["width"] > 0 and images[0]["height"] > 0, images  # the PNG decoded
            shot(f"refined_trajectories-{key}")
            close_dialog(driver)
    finally:
        driver.quit()
    for path in saved:
        print(f"[ui] screenshot {path}")
    if os.environ.get("REER_UI_SCREENSHOT_DIR"):
        target = Path(os.environ["REER_UI_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        for path in saved:
            shutil.copy(path, target / f"ui-{path.name}")
    print(f"[ui] browser part took {time.monotonic() - started:.1f}s")
