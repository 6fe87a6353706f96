"""labelstudio_backend.py and brat_ner/labelstudio_backend.py: the ML backend's answers in-process (FastAPI's
test client over the real app and a tiny trained model), its faults, and the whole loop against a real Label
Studio server and a headless Chromium.

Label Studio runs from its own virtual environment (it is a server the project talks to, not a library it
imports): ``$LABEL_STUDIO_VENV``, else ``.venv-label-studio/`` in the checkout, which .ci/run creates. Without it
those tests skip, saying how to get it. ``SAVE_SCREENSHOT=docs/images/labelstudio.png`` keeps the labeling page's
screenshot for the README."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from brat_ner.labelstudio_backend import SERVED_FILE, Backend, BackendSettings, create_app, remembered_model
from brat_ner.trust import trust_remote_code
from conftest import REPO, SAMPLE, SCRIPT_ENVIRONMENT, run_script
from dataset_script.brat import read_document
from dataset_script.formats import labelstudio

LABEL_STUDIO_VENV = Path(os.environ.get("LABEL_STUDIO_VENV") or REPO / ".venv-label-studio")
LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_HINT = (f"python -m venv .venv-label-studio && .venv-label-studio/bin/pip install label-studio=="
                f"{LABEL_STUDIO_VERSION} 'sentry-sdk<3' (as .ci/run does), or set LABEL_STUDIO_VENV")
USER, PASSWORD, TOKEN = "annotator@example.com", "annotate-1234", "0123456789abcdef0123456789abcdef01234567"
# A character outside the BMP before entities: one code point, two UTF-16 units; Label Studio counts code points.
EMOJI_PREFIX = "😀患者"
TRAINING_OPTIONS = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                    "use_cpu": True, "seed": 7, "window_chars": 62}


def load_tagger(folder: Path):
    """The model folder's pipeline, under the trust rule (the tiny model is train.py's: trusted unasked)."""
    from transformers import pipeline

    return pipeline("token-classification", model=str(folder), device="cpu",
                    trust_remote_code=trust_remote_code(str(folder), asked=False))


def backend_client(model_folder: Path, versions_dir: Path, **settings):
    from fastapi.testclient import TestClient

    backend = Backend(model_folder, BackendSettings(versions_dir, **settings), load_tagger)
    return backend, TestClient(create_app(backend))


def sample_texts(count: int) -> list[str]:
    return [read_document(path, path.with_suffix(".ann")).text for path in sorted(SAMPLE.glob("*.txt"))[:count]]


def config_of(backend) -> str:
    return labelstudio.labeling_config(backend.model.entity_types)


def check_offsets(text: str, results: list[dict]) -> None:
    """Every result's text is the task's text at its offsets, counted in code points."""
    assert results, "no entity predicted: offsets would go unchecked"
    for result in results:
        value = result["value"]
        assert text[value["start"]:value["end"]] == value["text"], value


# ----- in-process: the protocol's answers and the faults -----


def test_predict_scores_each_entity_and_task_at_code_point_offsets(trained_model, tmp_path):
    backend, client = backend_client(trained_model[0], tmp_path / "versions")
    assert client.get("/health").json() == {"status": "UP", "model_class": "BertBiLstmCrfForTokenClassification",
                                              "model_version": trained_model[0].name}
    assert client.post("/setup", json={"schema": config_of(backend)}).json() == {"model_version": trained_model[0].name}
    texts = [EMOJI_PREFIX + sample_texts(1)[0][:200], ""]
    answer = client.post("/predict", json={"tasks": [{"id": 7, "data": {"text": text}} for text in texts],
                                           "label_config": config_of(backend)})
    assert answer.status_code == 200
    first, empty = answer.json()["results"]
    check_offsets(texts[0], first["result"])
    assert [r["value"]["start"] for r in first["result"]] == sorted(r["value"]["start"] for r in first["result"])
    assert first["score"] == min(result["score"] for result in first["result"]) and 0 < first["score"] <= 1
    assert first["model_version"] == trained_model[0].name
    assert empty == {"result": [], "score": 0.0, "model_version": trained_model[0].name}


def test_predict_uses_the_projects_own_tag_names_and_only_its_labels(trained_model, tmp_path):
    backend, client = backend_client(trained_model[0], tmp_path / "versions")
    text = sample_texts(1)[0][:300]
    every = client.post("/predict", json={"tasks": [{"data": {"text": text}}], "label_config": config_of(backend)})
    kept = sorted({r["value"]["labels"][0] for r in every.json()["results"][0]["result"]})[:1]
    config = ('<View><Text name="note" value="$report"/><Labels name="ner" toName="note">'
              f'<Label value="{kept[0]}"/><Label value="NotAModelType"/></Labels></View>')
    answer = client.post("/predict", json={"tasks": [{"data": {"report": text}}], "label_config": config}).json()
    results = answer["results"][0]["result"]
    assert results and {(r["from_name"], r["to_name"], r["value"]["labels"][0]) for r in results} == {
        ("ner", "note", kept[0])}
    check_offsets(text, results)


def test_setup_accepts_labels_the_model_does_not_know_yet(trained_model, tmp_path):
    """A project may add types: they are learnt once the team trains, so setup answers with the version."""
    _, client = backend_client(trained_model[0], tmp_path / "versions")
    config = labelstudio.labeling_config(["Drug", "Gene"])
    assert client.post("/setup", json={"schema": config}).json() == {"model_version": trained_model[0].name}
    assert client.post("/setup", json={"schema": "<View/>"}).status_code == 422


@pytest.mark.parametrize("tasks, label_config, status, message", [
    ([{"id": 3, "data": {"title": "x"}}], None, 422, "task 3: no text in its data field 'text'"),
    ([{"id": 4, "data": {"text": "患" * 1_000_000}}], None, 413, "task 4: its text has 1000000 characters"),
    ([{"data": {"text": "患者"}}], '<View><Labels name="l" toName="t"><Label value="Gene"/></Labels>'
                                  '<Text name="t" value="$text"/></View>', 422, "the project's labels (Gene) are none"),
    ([{"data": {"text": "患者"}}], "<View>", 422, "the labeling config is not XML"),
    ("not a list", None, 422, "'tasks' must be a list"),
    ([{"data": {"text": "https://example.org/1.txt"}}], '<View><Labels name="l" toName="t"><Label value="Drug"/>'
     '</Labels><Text name="t" value="$text" valueType="url"/></View>', 422, "takes its text from a URL"),
])
def test_predict_refuses_bad_tasks_and_configs_in_one_json_message(trained_model, tmp_path, tasks, label_config,
                                                                   status, message):
    backend, client = backend_client(trained_model[0], tmp_path / "versions")
    answer = client.post("/predict", json={"tasks": tasks, "label_config": label_config or config_of(backend)})
    assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_a_body_that_is_not_json_is_refused_in_json(trained_model, tmp_path):
    _, client = backend_client(trained_model[0], tmp_path / "versions")
    answer = client.post("/predict", content=b"tasks", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json() == {"error": "the request body is not JSON"}


def _silent_server():
    """A socket that accepts connections and never answers: Label Studio hung."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("label_studio", ["down", "slow"])
def test_training_event_while_label_studio_is_down_or_slow_is_refused_and_nothing_changes(trained_model, tmp_path,
                                                                                          label_studio):
    silent = _silent_server() if label_studio == "slow" else None
    port = silent.getsockname()[1] if silent else _free_port()
    try:
        backend, client = backend_client(trained_model[0], tmp_path / "versions",
                                         label_studio_url=f"http://127.0.0.1:{port}", label_studio_api_key=TOKEN,
                                         label_studio_timeout=1)
        answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    finally:
        if silent:
            silent.close()
    expected = (504, "did not answer within 1 seconds") if silent else (502, "cannot be reached")
    assert (answer.status_code, expected[1] in answer.json()["error"]) == (expected[0], True), answer.text
    assert backend.model.version == trained_model[0].name and backend.training.state == "none"
    assert list((tmp_path / "versions").iterdir()) == []
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).json()["status"] == "ignored"


class FakeExport:
    """Label Studio's export of annotated tasks, served on 127.0.0.1 (for the faults of training; the real server
    is the end-to-end test's)."""

    def __init__(self, tasks):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps(tasks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def annotated_tasks(count: int) -> list[dict]:
    """The sample corpus' first documents as Label Studio tasks annotated with their gold entities."""
    tasks = []
    for number, path in enumerate(sorted(SAMPLE.glob("*.txt"))[:count], start=1):
        document = read_document(path, path.with_suffix(".ann"))
        spans = [[(e.type, e.start, e.end, None) for e in document.entities]]
        tasks.append({"id": number, **labelstudio.task(document.document_id, document.text, annotations=spans)})
    return tasks


def wait_for_training(client) -> dict:
    while (state := client.get("/training").json())["state"] == "running":
        time.sleep(0.5)
    return state


def test_two_training_events_at_once_train_once_and_a_killed_run_keeps_the_served_model(trained_model, tmp_path):
    export = FakeExport(annotated_tasks(4))
    options = tmp_path / "training.json"
    options.write_text(json.dumps({**TRAINING_OPTIONS, "num_train_epochs": 50}))
    try:
        backend, client = backend_client(trained_model[0], tmp_path / "versions", label_studio_url=export.url,
                                         label_studio_api_key=TOKEN, training_options=[str(options)])
        event = {"action": "START_TRAINING", "project": {"id": 1}}
        first = client.post("/webhook", json=event)
        second = client.post("/webhook", json=event)
        assert first.status_code == 201 and first.json()["model_version"] == f"{trained_model[0].name}-v1"
        assert second.status_code == 409 and "a training run is going" in second.json()["error"]
        while backend.training.pid is None:
            time.sleep(0.1)
        os.kill(backend.training.pid, signal.SIGKILL)
        state = wait_for_training(client)
    finally:
        export.server.shutdown()
    assert state["state"] == "failed" and "killed by signal 9" in state["error"], state
    assert state["served"] == trained_model[0].name == backend.model.version
    assert not (tmp_path / "versions" / SERVED_FILE).exists()
    # The next event trains again, into a new folder: the killed run's is never served.
    assert backend.next_version_folder().name == f"{trained_model[0].name}-v2"


def test_a_failed_training_run_says_why_and_a_finished_one_is_served(trained_model, tmp_path):
    options = tmp_path / "training.json"
    options.write_text(json.dumps({**TRAINING_OPTIONS, "learning_rate": -1}))
    export = FakeExport(annotated_tasks(4))
    try:
        backend, client = backend_client(trained_model[0], tmp_path / "versions", label_studio_url=export.url,
                                         label_studio_api_key=TOKEN, training_options=[str(options)])
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        failed = wait_for_training(client)
        options.write_text(json.dumps(TRAINING_OPTIONS))
        started = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        finished = wait_for_training(client)
    finally:
        export.server.shutdown()
    assert failed["state"] == "failed" and "train.py ended with exit status 2" in failed["error"], failed
    assert started.status_code == 201 and finished["state"] == "finished", finished
    new_version = f"{trained_model[0].name}-v2"
    assert finished["served"] == new_version == client.get("/health").json()["model_version"]
    assert remembered_model(tmp_path / "versions") == (tmp_path / "versions" / new_version).resolve()
    text = EMOJI_PREFIX + sample_texts(1)[0][:100]
    answer = client.post("/predict", json={"tasks": [{"data": {"text": text}}], "label_config": config_of(backend)})
    assert answer.json()["results"][0]["model_version"] == new_version


def test_the_command_refuses_a_folder_with_foreign_code_in_one_line(trained_model, tmp_path):
    folder = tmp_path / "foreign"
    shutil.copytree(trained_model[0], folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    (folder / "modeling_bert_bilstm_crf.py").write_text("print('not the project')\n")
    refused = run_script(["labelstudio_backend.py", "--model_name_or_path", str(folder), "--output_dir",
                          str(tmp_path / "versions")], succeeds=False)
    assert refused.returncode == 2 and "differs from this project's" in refused.stderr.strip().splitlines()[-1]


# ----- the real thing: Label Studio's server, this backend's command, and Chromium -----


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A Label Studio server on 127.0.0.1 with a temporary data folder, a user and its API token; its URL."""
    command = LABEL_STUDIO_VENV / "bin" / "label-studio"
    if not command.is_file():
        pytest.skip(f"Label Studio not found in {LABEL_STUDIO_VENV}: {INSTALL_HINT}")
    data_dir = tmp_path_factory.mktemp("label_studio")
    port = _free_port()
    environment = {**os.environ, "LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": PASSWORD,
                   "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                   "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "LATEST_VERSION_CHECK": "false",
                   # Label Studio refuses a backend (and its webhook) on 127.0.0.1 by default
                   "ML_BLOCK_LOCAL_IP": "false", "USE_DEFAULT_BANNED_SUBNETS": "false",
                   "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    with open(data_dir / "server.log", "w") as log:
        server = subprocess.Popen([str(command), "start", "--no-browser", "--data-dir", str(data_dir / "data"),
                                   "--host", "127.0.0.1", "--port", str(port), "--internal-host", "127.0.0.1"],
                                  env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server, data_dir / "server.log")
        yield url
    finally:
        server.terminate()
        server.wait()


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``url``/health until it answers; the process ending first fails with its log."""
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)


@pytest.fixture(scope="module")
def backend_server(label_studio, trained_model, tmp_path_factory):
    """labelstudio_backend.py serving the tiny model, as a user starts it; (its URL, its versions folder)."""
    # Label Studio's default kind of token: a personal access token (a JWT), made by its API.
    personal_token = label_studio_api(label_studio).post("/api/token/")
    assert personal_token.status_code == 201, personal_token.text
    folder = tmp_path_factory.mktemp("backend")
    (folder / "training.json").write_text(json.dumps(TRAINING_OPTIONS))
    port = _free_port()
    with open(folder / "backend.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "labelstudio_backend.py", "--model_name_or_path", str(trained_model[0]),
             "--output_dir", str(folder / "versions"), "--port", str(port), "--label_studio_url", label_studio,
             "--training_options", str(folder / "training.json")],
            cwd=REPO, env={**SCRIPT_ENVIRONMENT, "LABEL_STUDIO_API_KEY": personal_token.json()["token"]},
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server, folder / "backend.log")
        yield url, folder / "versions"
    finally:
        server.terminate()
        server.wait()


def label_studio_api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=300)


def retrieve_predictions(api: httpx.Client, project_id: int) -> None:
    """The Data Manager's "Retrieve Predictions" action on every task: Label Studio asks the backend."""
    answer = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
                      json={"selectedItems": {"all": True, "excluded": []}})
    assert answer.status_code == 200, answer.text


def export(api: httpx.Client, project_id: int) -> list[dict]:
    """The project's tasks as Label Studio exports them (JSON), each with its predictions in full (the export
    lists their ids)."""
    answer = api.get(f"/api/projects/{project_id}/export", params={"exportType": "JSON", "download_all_tasks": "true"})
    assert answer.status_code == 200, answer.text
    predictions = api.get("/api/predictions", params={"project": project_id}).json()
    tasks = sorted(answer.json(), key=lambda task: task["id"])
    for task in tasks:
        task["predictions"] = [prediction for prediction in predictions if prediction["task"] == task["id"]]
    return tasks


def test_label_studio_pre_annotates_exports_exact_offsets_and_trains_a_new_version(label_studio, backend_server,
                                                                                   trained_model, tmp_path):
    backend_url, versions_dir = backend_server
    api = label_studio_api(label_studio)
    entity_types = json.loads((trained_model[0] / "config.json").read_text())["id2label"].values()
    entity_types = sorted({label[2:] for label in entity_types if label != "O"})
    project = api.post("/api/projects", json={"title": "Ruijin NER",
                                              "label_config": labelstudio.labeling_config(entity_types)})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    connected = api.post("/api/ml", json={"url": backend_url, "project": project_id, "title": "BERT-BiLSTM-CRF"})
    assert connected.status_code == 201, connected.text
    texts = [EMOJI_PREFIX + text for text in sample_texts(5)]
    imported = api.post(f"/api/projects/{project_id}/import", json=[{"text": text} for text in texts])
    assert imported.status_code == 201, imported.text

    retrieve_predictions(api, project_id)
    tasks = export(api, project_id)
    assert [task["data"]["text"] for task in tasks] == texts
    first_version = trained_model[0].name
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == first_version
        check_offsets(task["data"]["text"], prediction["result"])
        assert prediction["score"] == min(result["score"] for result in prediction["result"])
    # The project's reader reads the export back: every entity at its characters, none refused.
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    read_back = labelstudio.read(tmp_path / "export.json", results_from="predictions")
    assert [len(document.entities) for document in read_back] == [len(t["predictions"][0]["result"]) for t in tasks]

    # Annotators correct the tasks: the gold entities of the sample documents, after the emoji.
    for task, gold in zip(tasks, annotated_tasks(5)):
        shifted = [(e.type, e.start + len(EMOJI_PREFIX), e.end + len(EMOJI_PREFIX), None)
                   for e in labelstudio.tasks_to_documents([gold], Path("gold"))[0].entities]
        result = labelstudio.results(task["data"]["text"], shifted,
                                     labelstudio.OffsetConverter(task["data"]["text"], "code_point"))
        assert api.post(f"/api/tasks/{task['id']}/annotations", json={"result": result}).status_code == 201
    (ml_backend,) = api.get("/api/ml", params={"project": project_id}).json()
    assert api.post(f"/api/ml/{ml_backend['id']}/train").status_code == 200
    while (training := httpx.get(f"{backend_url}/training").json())["state"] in ("none", "running"):
        time.sleep(1)
    assert training["state"] == "finished" and training["tasks"] == 5, training
    new_version = f"{first_version}-v1"
    assert training["served"] == new_version and (versions_dir / new_version / "run_record.json").is_file()

    retrieve_predictions(api, project_id)
    for task in export(api, project_id):
        assert new_version in [prediction["model_version"] for prediction in task["predictions"]]
        for prediction in task["predictions"]:
            check_offsets(task["data"]["text"], prediction["result"])


def test_labeling_page_shows_the_pre_annotated_entities_in_chromium(label_studio, backend_server, trained_model,
                                                                     tmp_path):
    """Label Studio's labeling page, in headless Chromium, highlights each predicted entity's very text (the
    screenshot in the README is this page)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -r "
                                    "requirements.txt)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not browser or not shutil.which("chromedriver"):
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (as .ci/run does)")
    backend_url, _ = backend_server
    api = label_studio_api(label_studio)
    entity_types = sorted({label[2:] for label in json.loads((trained_model[0] / "config.json").read_text())[
        "id2label"].values() if label != "O"})
    project = api.post("/api/projects", json={"title": "Pre-annotated by BERT-BiLSTM-CRF",
                                              "label_config": labelstudio.labeling_config(entity_types)})
    project_id = project.json()["id"]
    assert api.post("/api/ml", json={"url": backend_url, "project": project_id}).status_code == 201
    text = EMOJI_PREFIX + sample_texts(1)[0][:120]
    assert api.post(f"/api/projects/{project_id}/import", json=[{"text": text}]).status_code == 201
    retrieve_predictions(api, project_id)
    (task,) = export(api, project_id)
    expected = [result["value"]["text"] for result in task["predictions"][0]["result"]]

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                     "--lang=zh-CN"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 300)  # a safeguard only: the page is up in seconds
        driver.get(f"{label_studio}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD + "\n")
        wait.until(lambda page: "/user/login" not in page.current_url)
        driver.get(f"{label_studio}/projects/{project_id}/data?task={task['id']}")
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, ".htx-highlight")) >= len(expected))
        shown = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".htx-highlight")]
        screenshot = Path(os.environ.get("SAVE_SCREENSHOT") or tmp_path / "labelstudio.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot)) and screenshot.read_bytes().startswith(b"\x89PNG")
    finally:
        driver.quit()
    assert [text.strip() for text in shown] == [text.strip() for text in expected]
