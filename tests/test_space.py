"""The demo Space (space/app.py): published by push_to_hub.py --space_id, driven from a real headless browser.

The browser test needs Chromium and its driver from the system's packages (``apt-get install chromium
chromium-driver``, as .ci/run does) and the pip packages gradio and selenium; it skips, saying which is
missing, without them. ``SAVE_SCREENSHOT=docs/images/space_demo.png`` keeps its screenshot for the README
(by default it goes to the test's temporary folder); ``SPACE_MODEL=runs/...`` shows another model folder than
the tiny test model in it (the tiny one's entities are noise).
"""

import importlib.util
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from test_push_to_hub import RecordingApi
from test_trust import EARLIER_MODEL, tampered_copy

import predict
import processing_bert_bilstm_crf
import push_to_hub
from brat_ner import cli, trust
from conftest import REPO, SAMPLE, run_script

MODEL_ID, SPACE_ID = "someone/chinese-medical-ner", "someone/chinese-medical-ner-demo"
# A browser whose names resolve to nothing but this machine: the page must work without the internet.
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
WAIT_S = 120  # the most any page change may take on a busy 2-core machine; a hang fails instead of blocking


@pytest.fixture(scope="module")
def space_folder(trained_model, tmp_path_factory):
    """The dry run's Space folder, written by push_to_hub.py's own main()."""
    model_dir, _ = trained_model
    folder = tmp_path_factory.mktemp("dry") / "repo"
    arguments = ["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", MODEL_ID, "--space_id", SPACE_ID,
                 "--dry_run", str(folder)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", arguments)
        push_to_hub.main()
    return folder / "space"


def test_dry_run_writes_a_space_wired_to_the_model(space_folder):
    from huggingface_hub import SpaceCard

    assert sorted(path.name for path in space_folder.iterdir()) == ["README.md", "app.py", "model_code.sha256",
                                                                     "requirements.txt", "trust.py"]
    metadata = SpaceCard.load(space_folder / "README.md").data.to_dict()
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == [MODEL_ID]
    assert (space_folder / "app.py").read_bytes() == (REPO / "space" / "app.py").read_bytes()
    assert (space_folder.parent / "model.safetensors").is_file()  # the model repository beside it, as before


def test_space_requirements_pin_the_projects_versions(space_folder):
    """The Space installs the versions the project is tested with, gradio included (the card's sdk_version)."""
    from huggingface_hub import SpaceCard

    project = dict(_pins(REPO / "requirements.txt"))
    space = _pins(space_folder / "requirements.txt")
    assert space and all(project[name] == version for name, version in space)
    assert SpaceCard.load(space_folder / "README.md").data.sdk_version == project["gradio"]


def _pins(path: Path) -> list[tuple[str, str]]:
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [tuple(line.split("==")) for line in lines if line]


def test_push_uploads_the_space_after_the_model(trained_model):
    model_dir, _ = trained_model
    api = RecordingApi()
    arguments = push_to_hub.PushArguments(model_dir=str(model_dir), repo_id=MODEL_ID, space_id=SPACE_ID)
    push_to_hub.push(arguments, api)
    push_to_hub.push_space(arguments, api)
    assert [call[:2] for call in api.calls] == [("create_repo", MODEL_ID), ("upload_folder", MODEL_ID),
                                                ("create_repo", SPACE_ID), ("upload_folder", SPACE_ID)]
    assert api.calls[2][2] == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert api.calls[3][2] == ["README.md", "app.py", "model_code.sha256", "requirements.txt", "trust.py"]
    assert api.calls[3][3] == "*"


def test_bad_space_id_is_refused_before_anything_is_written(trained_model, tmp_path, monkeypatch, capsys):
    model_dir, _ = trained_model
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", MODEL_ID,
                                      "--space_id", "not a repo id", "--dry_run", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as refusal:
        cli.run_main(push_to_hub.main, "push_to_hub.py")
    assert refusal.value.code == 2 and capsys.readouterr().err.startswith("push_to_hub.py: --space_id: ")
    assert not (tmp_path / "out").exists()


def test_app_finds_its_model_in_the_space_card(space_folder, monkeypatch):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    monkeypatch.delenv("MODEL_ID", raising=False)
    app = _load_app(space_folder)
    assert app.model_reference() == MODEL_ID
    monkeypatch.setenv("MODEL_ID", "other/model")
    assert app.model_reference() == "other/model" and app.model_reference("a/folder") == "a/folder"
    monkeypatch.delenv("MODEL_ID")
    app = _load_app(REPO / "space")
    with pytest.raises(app.Refusal, match="no model: give --model, set MODEL_ID"):
        app.model_reference()  # the repository's card names no model yet


@pytest.mark.parametrize("published", [True, False], ids=["published", "from-the-repository"])
def test_app_refuses_a_tampered_model_unless_allowed(published, space_folder, trained_model, tmp_path, monkeypatch):
    """A model folder whose code is not the known code (the code published with the Space; run from the
    repository, the project's own) stops the app before that code runs, with one line saying how to allow it;
    ALLOW_REMOTE_CODE=1 allows it."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    app = _load_app(space_folder if published else REPO / "space")
    marker = tmp_path / "ran.txt"
    tampered = tampered_copy(trained_model[0], tmp_path / f"tampered_{'published' if published else 'repo'}", marker)
    monkeypatch.delenv(app.ALLOW_VARIABLE, raising=False)
    with pytest.raises(app.Refusal) as refusal:  # what main() runs before it serves the page
        app.load_tagger(str(tampered), app.remote_code_allowed(False))
    whose = "the one published with this Space (model_code.sha256)" if published else "this project's"
    assert str(refusal.value) == (f"app.py: {tampered} holds a {trust.MODELING_FILE} that differs from {whose}; "
                                  "loading it runs that repository's Python code. Set ALLOW_REMOTE_CODE=1 or give "
                                  "--trust_remote_code if you trust that code")
    assert not marker.exists()
    monkeypatch.setenv(app.ALLOW_VARIABLE, "1")
    app.load_tagger(str(tampered), app.remote_code_allowed(False))
    assert marker.read_text() == "ran"


def test_app_from_the_repository_runs_earlier_versions_of_the_projects_code(space_folder, monkeypatch):
    """Run from the repository, the app loads a folder of an earlier version of the project; the published
    Space holds to the code it was published with."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    monkeypatch.delenv("ALLOW_REMOTE_CODE", raising=False)
    tagger = _load_app(REPO / "space").load_tagger(str(EARLIER_MODEL))
    expected = json.loads((EARLIER_MODEL / "expected_entities.json").read_text(encoding="utf-8"))["01"]
    found = tagger((SAMPLE / "01.txt").read_text(encoding="utf-8"))
    assert expected and [(e["entity_group"], e["start"], e["end"]) for e in found] == [
        (e["entity_group"], e["start"], e["end"]) for e in expected]  # what that version found
    published = _load_app(space_folder)
    with pytest.raises(published.Refusal, match="differs from the one published with this Space"):
        published.load_tagger(str(EARLIER_MODEL))


def test_app_says_no_such_folder_for_a_mistyped_path(space_folder):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    app = _load_app(space_folder)
    with pytest.raises(app.Refusal) as refusal:
        app.load_tagger("./outputs/no_such_model")
    assert str(refusal.value) == "app.py: ./outputs/no_such_model: no such folder"


def test_app_refuses_pickled_weights_and_exits_2_in_one_line(space_folder, trained_model, tmp_path):
    """The Space follows the project's one pickle rule (brat_ner/trust.py, published beside it), and its
    refusals end it as the commands' do: one line, exit status 2."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    pickled = shutil.copytree(trained_model[0], tmp_path / "pickled", ignore=shutil.ignore_patterns("checkpoint-*"))
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle: loading it could run any code")
    for app_path in (space_folder / "app.py", REPO / "space" / "app.py"):
        completed = run_script([str(app_path), "--model", str(pickled)], succeeds=False)
        assert completed.returncode == 2 and completed.stderr.strip() == (
            f"app.py: {pickled} holds pytorch_model.bin, a pickle, which can run any code when loaded; this project "
            "loads safetensors only. Where you trust that file, load the model and save it with save_pretrained() to "
            "get a model.safetensors")


def test_browser_shows_and_downloads_predict_pys_entities(space_folder, request, tmp_path):
    """The Space as shipped, served on 127.0.0.1: text typed into the page comes back highlighted with the
    entities, types and offsets predict.py gives for it, and the two downloads hold exactly those."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -r "
                                    "requirements.txt)")
    browser, driver_path = _system_chromium()
    model_dir = os.environ.get("SPACE_MODEL") or str(request.getfixturevalue("trained_model")[0])
    app = _load_app(space_folder)
    # Two lines, spaces and digits: offsets must survive the browser, the line break and the tokenizer.
    text = f"{app.EXAMPLES[0]}\n{app.EXAMPLES[1]}"
    expected = predict.tag_texts(predict.load_tagger(predict.PredictArguments(model_name_or_path=model_dir,
                                                                              device="cpu")), [text], 8)[0]
    assert expected, "the model finds no entity in the test text: nothing would be compared"

    demo = app.build_demo(app.load_tagger(model_dir), Path(model_dir).name)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    downloads, driver = tmp_path / "downloads", None
    try:
        driver = _headless_chromium(webdriver, browser, driver_path, downloads)
        driver.get(demo.local_url)
        fragments = processing_bert_bilstm_crf.line_fragments
        assert _submit(driver, text) == [(e["entity_group"], text[start:end], start, end) for e in expected
                                         for start, end in fragments(text, e["start"], e["end"])]
        rows = [[e["entity_group"], e["word"], str(e["start"]), str(e["end"]), str(round(e["score"], 3))]
                for e in expected]
        assert all(rows[index] == row for index, row in _table_rows(driver).items())
        json_download = _download(driver, "download-json", downloads / "entities.json")
        ann_download = _download(driver, "download-ann", downloads / "entities.ann")
        screenshot = Path(os.environ.get("SAVE_SCREENSHOT") or tmp_path / "space_demo.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(screenshot)) and screenshot.read_bytes().startswith(b"\x89PNG")
        requested = _requested_urls(driver)
    finally:  # no browser or server outlives the test
        if driver:
            driver.quit()
        demo.close()

    saved = json.loads(json_download.read_text(encoding="utf-8"))
    assert saved["text"] == text
    assert [{k: e[k] for k in ("entity_group", "word", "start", "end")} for e in saved["entities"]] == [
        {k: e[k] for k in ("entity_group", "word", "start", "end")} for e in expected]
    assert [e["score"] for e in saved["entities"]] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert ann_download.read_text(encoding="utf-8") == predict.brat_annotations(text, expected)
    assert requested and all(url.startswith(demo.local_url) for url in requested), requested


def _load_app(space_folder: Path):
    """space_folder/app.py as a module, imported from the folder as the Space runs it."""
    spec = importlib.util.spec_from_file_location("space_app", space_folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _system_chromium() -> tuple[str, str]:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (as .ci/run does)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _headless_chromium(webdriver, browser: str, driver_path: str, downloads: Path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1200",
                     "--lang=zh-CN", LOCAL_ONLY):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _submit(driver, text: str) -> list[tuple[str, str, int, int]]:
    """Type the text, press the button, and read the highlighted pieces back: (type, text, start, end), offsets
    counted over the shown pieces, which must make up the text. The page shows a line break as an element of
    its own, so an entity that crosses one comes back as its pieces between line breaks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#input-text textarea"))
    box.send_keys(text)  # "\n" in a multi-line text box is a line break (Shift+Enter would submit)
    wait.until(lambda d: box.get_attribute("value") == text)
    driver.find_element(By.ID, "submit").click()

    def pieces(driver):
        elements = driver.find_elements(By.CSS_SELECTOR, "#entities .token, #entities .line-break")
        found = [("\n", None) if "line-break" in element.get_attribute("class").split()
                 else (_content(element, ".text"), _content(element, ".label")) for element in elements]
        return found if "".join(piece for piece, _ in found) == text else None

    entities, start = [], 0
    for piece, label in wait.until(pieces):
        if label:
            entities.append((label, piece, start, start + len(piece)))
        start += len(piece)
    return entities


def _table_rows(driver) -> dict[int, list[str]]:
    """The entity table's rows on the page by index, once it has a first entity: the table renders only the
    rows in view, so these are the first ones, not necessarily all."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def rows(driver):
        cells = driver.find_elements(By.CSS_SELECTOR, "#table [role=gridcell][data-row]")
        found = {}
        for cell in cells:
            found.setdefault(int(cell.get_attribute("data-row")), {})[int(cell.get_attribute("data-col"))] = (
                cell.get_attribute("textContent").strip())
        table = {row: [columns[column] for column in sorted(columns)] for row, columns in found.items()}
        return table if table.get(0, [""])[0] else None

    return WebDriverWait(driver, WAIT_S).until(rows)


def _content(token, selector: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = token.find_elements(By.CSS_SELECTOR, selector)
    return found[0].get_attribute("textContent") if found else None  # textContent: whitespace as it is


def _download(driver, button_id: str, path: Path) -> Path:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, f"#{button_id}").click()
    WebDriverWait(driver, WAIT_S).until(lambda _: path.is_file() and path.stat().st_size > 0)
    return path


def _requested_urls(driver) -> list[str]:
    """Every http(s) or websocket URL the page asked for (Chromium's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = message["params"].get("request", {}).get("url") or message["params"].get("url", "")
            if url.startswith(("http", "ws")):
                urls.append(url.replace("ws://", "http://", 1))
    return urls
