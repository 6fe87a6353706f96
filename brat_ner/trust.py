"""Remote code: a model folder's Python code runs only when the user asked for it, or when it is this project's
own code. The one helper that every command, the Space, the notebook and the benchmarks ask.

It imports nothing of the project but its one exception for a user's mistake: ``push_to_hub.py --space_id`` publishes
a copy of this file with the demo Space (where a refusal is a ``ValueError``), which checks a model repository against
the code published with it (``known`` of ``foreign_code``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

try:
    from brat_ner.cli import UsageError
except ImportError:  # the demo Space's copy of this file, without the project
    UsageError = ValueError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELING_FILE = "modeling_bert_bilstm_crf.py"
# The model's code, which save_pretrained copies into every model folder: the modelling file and its relative imports
# (folders saved before 2026-12-07 hold the modelling file alone).
MODEL_CODE_FILES = (MODELING_FILE, "configuration_bert_bilstm_crf.py", "crf.py", "pipeline_bert_bilstm_crf.py",
                    "processing_bert_bilstm_crf.py")
# push_to_hub.py puts the Inference Endpoint handler beside the model; it runs only on an endpoint.
HANDLER_FILE = "handler.py"
HANDLER_SOURCE = PROJECT_ROOT / "endpoint" / HANDLER_FILE
# Every version of the model's code the project has committed (``SHA256  FILE`` lines, derived from git's history and
# checked against it by tests/test_trust.py): folders trained by earlier versions run their code.
MODEL_CODE_HISTORY = Path(__file__).with_name("model_code_history.txt")
# A Hub repository id: a name, or namespace/name, of letters, digits, '-', '_' and '.'.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")
ALLOW_HINT = "Add --trust_remote_code"


def trust_remote_code(model_name_or_path: str, asked: bool, allow_hint: str = ALLOW_HINT) -> bool:
    """Whether loading ``model_name_or_path`` may run the Python code it comes with: when the user asked
    (``--trust_remote_code``), or when it is a local folder whose only code is this project's own (a folder
    written by train.py, by this version or an earlier one). Anything else raises ``UsageError`` saying how to
    allow it (``allow_hint``: the caller's way), rather than running code the user never saw; a path that
    looks local and does not exist is "no such folder", as the flag would not help."""
    if asked:
        return True
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        if looks_local(model_name_or_path):
            raise UsageError(f"{model_name_or_path}: no such folder")
        problem = "is not a local folder (a Hub repository?)"
    else:
        problem = foreign_code(folder, project_code())
    if problem is None:
        return True
    raise UsageError(f"{model_name_or_path} {problem}; loading it runs that repository's Python code. "
                     f"{allow_hint} if you trust that code")


def pickled_weights_problem(folder: Path) -> str | None:
    """Why a model folder's weights may not be loaded: they are pickles only (``pytorch_model.bin``), which can
    run any code when loaded, with no safetensors beside them; None otherwise. The one rule for every command,
    the Space and the notebook that load weights (a Space has this file and no other of the project)."""
    folder = Path(folder)
    pickles = sorted(path.name for path in folder.glob("*.bin")) if folder.is_dir() else []
    if not pickles or any(folder.glob("*.safetensors")):
        return None
    return (f"holds {pickles[0]}, a pickle, which can run any code when loaded; this project loads safetensors "
            "only. Where you trust that file, load the model and save it with save_pretrained() to get a "
            "model.safetensors")


def is_project_folder(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a local folder whose only code is this project's own (no question asked)."""
    folder = Path(name_or_path)
    return folder.is_dir() and foreign_code(folder, project_code()) is None


def looks_local(name: str) -> bool:
    """Whether a model name is a path rather than a Hub id: not of a Hub id's form (a leading '.', '/' or '~',
    a backslash, two '/'), or its first part is a folder here (``outputs/ruijn`` where ``outputs/`` exists)."""
    if not HUB_ID.fullmatch(name):
        return True
    namespace, slash, _ = name.partition("/")
    return bool(slash) and Path(namespace).is_dir()


def project_code() -> dict[str, set[str]]:
    """The sha256 of each Python file this project writes into model folders, by file name: every committed
    version of the model's code, and the present model code and endpoint handler."""
    known = read_hashes(MODEL_CODE_HISTORY)
    for path in (*(PROJECT_ROOT / name for name in MODEL_CODE_FILES), HANDLER_SOURCE):
        if path.is_file():
            known.setdefault(path.name, set()).add(sha256_of(path))
    return known


def read_hashes(path: Path) -> dict[str, set[str]]:
    """sha256 by file name from lines ``SHA256  FILE`` (``sha256sum``'s output; ``#`` starts a comment); a line
    without a Python file's name is the modelling file's (the Space's pinned code of earlier versions)."""
    hashes: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            name = fields[1] if len(fields) > 1 and fields[1].endswith(".py") else MODELING_FILE
            hashes.setdefault(name, set()).add(fields[0].lower())
    return hashes


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def foreign_code(folder: Path, known: dict[str, set[str]], whose: str = "this project's") -> str | None:
    """Why the code of a model folder is not the known code (sha256 by file name), or None when it is: each
    Python file must be one of ``known``'s names with one of its hashes, and the configs may name code in the
    model's code files only."""
    for path in sorted(folder.glob("*.py")):
        if path.name not in known:
            return f"holds Python code of its own ({path.name})"
        if sha256_of(path) not in known[path.name]:
            return f"holds a {path.name} that differs from {whose}"
    for name in ("config.json", "tokenizer_config.json"):
        foreign = sorted(reference for reference in _code_references(folder / name)
                         if f"{reference.partition('.')[0]}.py" not in MODEL_CODE_FILES)
        if foreign:
            return f"names code outside the model's code files in its {name} ({foreign[0]})"
    return None


def _code_references(config_path: Path) -> set[str]:
    """The ``module.Class`` names a config's ``auto_map`` and ``custom_pipelines`` load code from."""
    if not config_path.is_file():
        return set()
    config = json.loads(config_path.read_text(encoding="utf-8"))
    references = set()
    for value in (config.get("auto_map") or {}).values():
        references.update([value] if isinstance(value, str) else [name for name in value if name])
    for task in (config.get("custom_pipelines") or {}).values():
        references.add(task.get("impl", ""))
    return references
