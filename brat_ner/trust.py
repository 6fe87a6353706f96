"""Remote code: a model folder's Python code runs only when the user asked for it, or when it is this project's
own modelling file. The one helper that every command, the Space, the notebook and the benchmarks ask."""

from __future__ import annotations

import json
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELING_FILE = "modeling_bert_bilstm_crf.py"



def trust_remote_code(model_name_or_path: str, asked: bool) -> bool:
    """Whether loading ``model_name_or_path`` may run the Python code it comes with: when the user asked
    (``--trust_remote_code``), or when it is a local folder whose only code is this project's own modelling
    file, byte for byte (a folder written by train.py). Anything else raises ``ValueError`` telling the user
    how to allow it, rather than running code they never saw."""
    if asked:
        return True
    folder = Path(model_name_or_path)
    problem = _foreign_code(folder) if folder.is_dir() else "is not a local folder (a Hub repository?)"
    if problem is None:
        return True
    raise ValueError(f"{model_name_or_path} {problem}; loading it runs that repository's Python code. Add "
                     "--trust_remote_code if you trust that code")


def _foreign_code(folder: Path) -> str | None:
    """Why the code of a model folder is not this project's own, or None when it is."""
    for path in sorted(folder.glob("*.py")):
        if path.name != MODELING_FILE:
            return f"holds Python code of its own ({path.name})"
        if path.read_bytes() != (PROJECT_ROOT / MODELING_FILE).read_bytes():
            return f"holds a {MODELING_FILE} that differs from this project's"
    for name in ("config.json", "tokenizer_config.json"):
        references = _code_references(folder / name)
        foreign = sorted(reference for reference in references
                         if reference.partition(".")[0] != MODELING_FILE.removesuffix(".py"))
        if foreign:
            return f"names code outside {MODELING_FILE} in its {name} ({foreign[0]})"
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

