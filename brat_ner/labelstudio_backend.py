"""A Label Studio ML backend: the HTTP server that Label Studio's "Model" settings connect to.

Label Studio speaks this protocol (``label_studio/ml/api_connector.py``): ``GET /health``; ``POST /setup`` with
the project's labeling config (``schema``), answered with the ``model_version``; ``POST /predict`` with ``tasks``
and the ``label_config``, answered with one prediction per task (``{"results": [...]}``); ``POST /webhook``, whose
``START_TRAINING`` action is the "Start Training" button. Built on FastAPI and uvicorn, which the project already
has with gradio; ``label-studio-ml`` is not used: it is a Flask app generator that pins its own ``label-studio-sdk``,
and its model class wants one process per model, where this backend switches models inside one server.

Predictions are the project's pipeline: CRF paths, each entity scored by its CRF marginals, offsets counted in
code points (Label Studio's unit, ``dataset_script.formats.labelstudio``), and the task's score its least certain
entity's (0 without entities), so Label Studio's "sort by prediction score" puts the least certain tasks first.

Training: ``START_TRAINING`` exports the project's annotated tasks from Label Studio's REST API (what
``label-studio-sdk``'s ``projects.exports`` calls; the SDK itself pins numpy below the version this project is
tested with), divides them into train/validation/test, and runs ``train.py --model_name_or_path SERVED`` in
the background into a new version folder (train.py holds that folder's run lock). The served model is switched
when the run finished as its record says; a failed or killed run leaves it as it was, and ``GET /training`` says
why. One run at a time: a second event while one runs is refused (409) rather than queued behind it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from brat_ner.files import atomic_write, check_writable_folder
from brat_ner.runs import read_record, unfinished_run_problem
from dataset_script.formats import labelstudio

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = PROJECT_ROOT / "train.py"
SERVED_FILE = "served.json"  # in the versions folder: the version served, so a restart serves it again
TRAINING_DATA = "label_studio_tasks"  # in a version folder: the exported tasks it was trained on
TRAINING_LOG = "training.log"


class BackendError(Exception):
    """A request the backend refuses: answered with ``status`` and ``{"error": message}``, never a traceback."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class LabelingConfig:
    """What a project's labeling config tells the backend: the Labels tag (``from_name``), the Text tag it labels
    (``to_name``), the task's data field holding the text and the label values."""

    from_name: str
    to_name: str
    data_key: str
    labels: list[str]

    @classmethod
    def parse(cls, config: str) -> LabelingConfig:
        if not isinstance(config, str) or not config.strip():
            raise BackendError(422, "no labeling config was sent")
        try:
            root = ElementTree.fromstring(config)
        except ElementTree.ParseError as error:
            raise BackendError(422, f"the labeling config is not XML ({error})") from None
        texts = {tag.get("name"): tag.get("value", "") for tag in root.iter("Text")}
        if any(tag.get("valueType") == "url" for tag in root.iter("Text")):
            raise BackendError(422, "the labeling config's <Text> takes its text from a URL (valueType=\"url\"), "
                                    "which this backend does not fetch: import the texts themselves")
        for labels in root.iter("Labels"):
            if labels.get("toName") in texts and texts[labels.get("toName")].startswith("$"):
                return cls(labels.get("name"), labels.get("toName"), texts[labels.get("toName")][1:],
                           [label.get("value") for label in labels.iter("Label")])
        raise BackendError(422, "the labeling config has no <Labels> on a <Text value=\"$...\">: this backend "
                                "labels spans of text")


@dataclass
class ServedModel:
    folder: Path
    tagger: object

    @property
    def version(self) -> str:
        return self.folder.name

    @property
    def entity_types(self) -> list[str]:
        labels = self.tagger.model.config.id2label.values()
        return sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")})


@dataclass
class TrainingState:
    """The last training run: ``state`` is running, finished or failed; ``error`` says why a run failed."""

    state: str = "none"
    version: str | None = None
    started: float | None = None
    error: str | None = None
    pid: int | None = None
    tasks: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BackendSettings:
    """How the backend serves and trains (the command's options)."""

    versions_dir: Path
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    label_studio_timeout: float = 30.0
    max_text_chars: int = 100_000
    batch_size: int = 32
    training_options: list[str] = field(default_factory=list)  # train.py arguments: a JSON file and/or options


class Backend:
    """The served model, its predictions, and training new versions of it in the background."""

    def __init__(self, model_folder: Path, settings: BackendSettings, load_tagger):
        self.settings = settings
        self.load_tagger = load_tagger  # folder -> pipeline (the caller applies the trust rule)
        check_writable_folder(settings.versions_dir, "--output_dir")
        self.model = ServedModel(model_folder, load_tagger(model_folder))
        self.training = TrainingState()
        self.training_lock = threading.Lock()  # one training run at a time
        self.tagging_lock = threading.Lock()  # requests run in worker threads; a pipeline tags one batch at a time

    # ----- prediction -----

    def predict(self, tasks, label_config: str) -> list[dict]:
        config = LabelingConfig.parse(label_config)
        model = self.model
        known = set(model.entity_types) & set(config.labels)
        if not known:
            raise BackendError(422, f"the project's labels ({', '.join(config.labels) or 'none'}) are none of the "
                                    f"model's types ({', '.join(model.entity_types)}): nothing to pre-annotate; "
                                    "annotate some tasks and train")
        if not isinstance(tasks, list):
            raise BackendError(422, "'tasks' must be a list of Label Studio tasks")
        texts = [self.task_text(task, config) for task in tasks]
        with self.tagging_lock:
            tagged = list(model.tagger((text for text in texts), batch_size=self.settings.batch_size))
        return [self.prediction(text, [entity for entity in entities if entity["entity_group"] in known], config,
                                model.version) for text, entities in zip(texts, tagged)]

    def task_text(self, task, config: LabelingConfig) -> str:
        where = f"task {task.get('id', '?')}" if isinstance(task, dict) else "a task"
        data = task.get("data") if isinstance(task, dict) else None
        text = data.get(config.data_key) if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise BackendError(422, f"{where}: no text in its data field '{config.data_key}' (the labeling "
                                    f"config's <Text name=\"{config.to_name}\"> reads it)")
        if len(text) > self.settings.max_text_chars:
            raise BackendError(413, f"{where}: its text has {len(text)} characters, more than this backend tags "
                                    f"per task (--max_text_chars {self.settings.max_text_chars}); split it into "
                                    "smaller tasks")
        return text

    @staticmethod
    def prediction(text: str, entities: list[dict], config: LabelingConfig, version: str) -> dict:
        """One task's prediction: each entity scored, and the task scored by its least certain entity (0 without
        entities: nothing to confirm, everything to find), as ``predict.py --preannotate`` ranks documents."""
        spans = [(entity["entity_group"], entity["start"], entity["end"], round(float(entity["score"]), 4))
                 for entity in entities]
        score = min((span[3] for span in spans), default=0.0)
        made = labelstudio.prediction(text, spans, score, version)
        for result in made["result"]:  # the project's own names for its Labels and Text tags
            result["from_name"], result["to_name"] = config.from_name, config.to_name
        return made

    # ----- training -----

    def start_training(self, project) -> dict:
        """Export the project's annotations (errors go back to the caller) and train a new version in the
        background; refused while a run is going."""
        project_id = project.get("id") if isinstance(project, dict) else None
        if not isinstance(project_id, int):
            raise BackendError(422, "the training event names no project (project.id)")
        if not self.training_lock.acquire(blocking=False):
            raise BackendError(409, f"a training run is going (version {self.training.version}, started "
                                    f"{time.ctime(self.training.started)}); start training again when it is over")
        try:
            tasks = self.export_annotated_tasks(project_id)
            folder = self.next_version_folder()
            self.training = TrainingState("running", folder.name, time.time(), tasks=len(tasks))
            data_dir = self.write_training_data(folder, tasks)
        except BaseException:
            self.training_lock.release()
            raise
        threading.Thread(target=self._train, args=(folder, data_dir), daemon=True).start()
        return {"status": "training", "model_version": folder.name, "tasks": len(tasks)}

    def export_annotated_tasks(self, project_id: int) -> list[dict]:
        """The project's tasks with annotations, in Label Studio's JSON export."""
        url, key, timeout = (self.settings.label_studio_url, self.settings.label_studio_api_key,
                             self.settings.label_studio_timeout)
        if not url or not key:
            raise BackendError(422, "training reads the annotations from Label Studio: start the backend with "
                                    "--label_studio_url and --label_studio_api_key (or LABEL_STUDIO_API_KEY)")
        url = url.rstrip("/")
        try:
            response = httpx.get(f"{url}/api/projects/{project_id}/export", params={"exportType": "JSON"},
                                 headers={"Authorization": authorization(url, key, timeout)}, timeout=timeout)
        except httpx.TimeoutException:
            raise BackendError(504, f"Label Studio at {url} did not answer within {timeout:g} seconds"
                                    " (--label_studio_timeout); the served model is unchanged") from None
        except httpx.HTTPError as error:
            raise BackendError(502, f"Label Studio at {url} cannot be reached ({error}); the served model is "
                                    "unchanged") from None
        if response.status_code != 200:
            raise BackendError(502, f"Label Studio at {url} refused the export of project {project_id} (HTTP "
                                    f"{response.status_code}: {response.text[:200]})")
        try:
            tasks = response.json()
        except ValueError:
            raise BackendError(502, f"Label Studio at {url} sent an export that is not JSON") from None
        annotated = [task for task in tasks if isinstance(task, dict) and any(
            not annotation.get("was_cancelled") for annotation in task.get("annotations") or [])]
        if len(annotated) < 3:
            raise BackendError(422, f"project {project_id} has {len(annotated)} annotated tasks; training needs at "
                                    "least 3 (one each for training, validation and the test report)")
        return annotated

    def next_version_folder(self) -> Path:
        """A new folder in the versions folder: the served model's name, ``-v``, the next number (a number is
        taken once its run's training data is written, even if the run never got to make its folder)."""
        base = re.sub(r"-v\d+$", "", self.model.version)
        taken = {path.name for path in self.settings.versions_dir.iterdir()}
        number = 1
        while {f"{base}-v{number}", f".{base}-v{number}-{TRAINING_DATA}"} & taken:
            number += 1
        return self.settings.versions_dir / f"{base}-v{number}"

    @staticmethod
    def write_training_data(folder: Path, tasks: list[dict]) -> Path:
        """The tasks as a corpus of three split folders (a tenth each for validation and test, at least one
        task each), divided by a hash of the task id so that a task stays in its split as annotation goes on."""
        data_dir = folder.with_name(f".{folder.name}-{TRAINING_DATA}")
        order = sorted(tasks, key=lambda task: hashlib.sha1(str(task.get("id")).encode()).hexdigest())
        held_out = max(1, len(order) // 10)
        splits = {"validation": order[:held_out], "test": order[held_out:2 * held_out], "train": order[2 * held_out:]}
        for split, members in splits.items():
            (data_dir / split).mkdir(parents=True, exist_ok=True)
            atomic_write(data_dir / split / "tasks.json", labelstudio.dumps(members))
        return data_dir

    def _train(self, folder: Path, data_dir: Path) -> None:
        try:
            error = self._run_training(folder, data_dir)
            if error is None:
                self.switch_to(folder)
                self.training.state = "finished"
            else:
                self.training.state, self.training.error = "failed", error
                logger.error("Training %s failed, still serving %s: %s", folder.name, self.model.version, error)
        except Exception as error:  # the server goes on serving whatever went wrong in the background
            self.training.state, self.training.error = "failed", f"{type(error).__name__}: {error}"
            logger.exception("Training %s failed, still serving %s", folder.name, self.model.version)
        finally:
            self.training.pid = None
            self.training_lock.release()

    def _run_training(self, folder: Path, data_dir: Path) -> str | None:
        """Run train.py into ``folder``; None when the run finished as its record says, else why not."""
        command = [sys.executable, str(TRAIN_SCRIPT), *self.settings.training_options, "--data_dir", str(data_dir),
                   "--model_name_or_path", str(self.model.folder), "--output_dir", str(folder)]
        log_path = folder.with_name(f".{folder.name}-{TRAINING_LOG}")
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
            self.training.pid = process.pid
            status = process.wait()
        if status != 0:
            lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            said = lines[-1] if lines else ""
            how = f"was killed by signal {-status}" if status < 0 else f"ended with exit status {status}"
            return f"train.py {how}" + (f": {said}" if said else "") + f" (log: {log_path})"
        if read_record(folder) is None:
            return f"train.py wrote no run record in {folder}"
        return unfinished_run_problem(folder)

    def switch_to(self, folder: Path) -> None:
        """Serve ``folder`` from now on (loaded first: requests meanwhile get the old model), and remember it."""
        self.model = ServedModel(folder, self.load_tagger(folder))  # predict() holds on to the model it started with
        atomic_write(self.settings.versions_dir / SERVED_FILE, json.dumps({"model": str(folder.resolve())}) + "\n")
        logger.warning("Now serving %s", folder)


def authorization(url: str, key: str, timeout: float) -> str:
    """The Authorization header for a Label Studio token: a personal access token (a JWT, Label Studio's default
    since 1.18) is a refresh token, exchanged for an access token as label-studio-sdk does; a legacy token is sent
    as it is."""
    if key.count(".") != 2:
        return f"Token {key}"
    response = httpx.post(f"{url}/api/token/refresh/", json={"refresh": key}, timeout=timeout)
    if response.status_code != 200 or "access" not in response.json():
        raise BackendError(502, f"Label Studio at {url} refused the access token (HTTP {response.status_code}: "
                                f"{response.text[:200]}); give a valid one in --label_studio_api_key")
    return f"Bearer {response.json()['access']}"


def remembered_model(versions_dir: Path) -> Path | None:
    """The version a backend on ``versions_dir`` served last, when it is still a finished run."""
    path = versions_dir / SERVED_FILE
    if not path.is_file():
        return None
    folder = Path(json.loads(path.read_text(encoding="utf-8"))["model"])
    return folder if folder.is_dir() and read_record(folder) and unfinished_run_problem(folder) is None else None


def create_app(backend: Backend) -> FastAPI:
    """The HTTP routes of Label Studio's ML backend protocol, and ``GET /training`` for people."""
    app = FastAPI(title="BERT-BiLSTM-CRF NER backend for Label Studio")

    @app.exception_handler(BackendError)
    async def refuse(request: Request, error: BackendError):
        logger.warning("%s %s refused (%d): %s", request.method, request.url.path, error.status, error)
        return JSONResponse({"error": str(error)}, status_code=error.status)

    async def body(request: Request) -> dict:
        try:
            value = await request.json()
        except ValueError:
            raise BackendError(400, "the request body is not JSON") from None
        if not isinstance(value, dict):
            raise BackendError(400, "the request body must be a JSON object")
        return value

    @app.get("/")
    @app.get("/health")
    def health():
        return {"status": "UP", "model_class": "BertBiLstmCrfForTokenClassification",
                "model_version": backend.model.version}

    @app.post("/setup")
    async def setup(request: Request):
        request_body = await body(request)
        config = LabelingConfig.parse(request_body.get("schema"))
        unknown = sorted(set(config.labels) - set(backend.model.entity_types))
        if unknown:  # not an error: they are learnt from the team's annotations once it trains
            logger.warning("The project's labels %s are not among the model's types; they are not pre-annotated "
                           "until a trained version knows them", ", ".join(unknown))
        return {"model_version": backend.model.version}

    @app.post("/predict")
    async def predict(request: Request):
        request_body = await body(request)
        # Tagging takes seconds: in a worker thread, so /health answers meanwhile.
        results = await run_in_threadpool(backend.predict, request_body.get("tasks"), request_body.get("label_config"))
        return {"results": results, "model_version": backend.model.version}

    @app.post("/webhook")
    async def webhook(request: Request):
        request_body = await body(request)
        if request_body.get("action") != "START_TRAINING":
            return {"status": "ignored", "action": request_body.get("action")}  # annotation events: no retraining
        started = await run_in_threadpool(backend.start_training, request_body.get("project"))
        return JSONResponse(started, status_code=201)

    @app.get("/training")
    def training():
        return {**backend.training.as_dict(), "served": backend.model.version}

    return app

