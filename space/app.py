"""A Gradio demo of the BERT-BiLSTM-CRF Chinese medical NER model: paste text, see its entities, download them.

    python space/app.py --model outputs/quickstart          # a train.py output folder
    MODEL_ID=your-name/bert-bilstm-crf-chinese-medical-ner python space/app.py

The Hub's hosted inference runs neither custom models nor custom pipelines, so this app is how the model is
tried in a browser. It is a Hugging Face Space as it stands (app.py, requirements.txt, README.md): the model,
its modelling file and its CRF-decoding pipeline come from the model repository through
``pipeline(..., trust_remote_code=True)``. The model is ``--model``, else ``MODEL_ID``, else the first of the
``models`` in this folder's README.md metadata (``push_to_hub.py --space_id`` writes it there).

Loading the model runs its repository's Python code, so the app first checks that code with the project's
trust helper (``brat_ner/trust.py``) and refuses any other unless ``--trust_remote_code`` is given or
``ALLOW_REMOTE_CODE=1`` is set. Run from the repository, the code must be the project's own (any version of
its modelling file). Published by ``push_to_hub.py --space_id``, the Space holds a copy of the helper
(``trust.py``) and ``model_code.sha256``, the sha256 of the code uploaded with the model, which its uploader
saw: the model repository's code must be exactly that. A Hub model is downloaded first, so the files checked
are the files loaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr
from huggingface_hub import metadata_load, snapshot_download
from transformers import pipeline

SPACE_CARD = Path(__file__).with_name("README.md")
# The code a published Space runs (push_to_hub.py writes it); absent when the app runs from the repository.
PINNED_CODE = Path(__file__).with_name("model_code.sha256")
# The trust helper: the copy published beside the app, else the repository's.
TRUST_HELPER = next(path for path in (Path(__file__).with_name("trust.py"),
                                      Path(__file__).resolve().parents[1] / "brat_ner" / "trust.py")
                    if path.is_file())
ALLOW_VARIABLE = "ALLOW_REMOTE_CODE"  # =1: run any model's code (a variable of the Space)
MAX_CHARS = 5000  # keeps a request on a shared CPU Space short; predict.py takes documents of any length
EXAMPLES = [
    "2 型糖尿病患者应每 3 个月检测一次糖化血红蛋白（HbA1c），目标值一般控制在 7.0% 以下。",
    "二甲双胍 500 mg 每日 2 次口服，常见不良反应为腹泻和恶心。",
    "妊娠期糖尿病孕妇在饮食控制无效时应使用胰岛素治疗，并监测空腹血糖。",
    "糖尿病肾病患者出现蛋白尿时，推荐使用血管紧张素转换酶抑制剂。",
]
TABLE_HEADERS = ["type", "text", "start", "end", "score"]
# Light, pairwise distinct backgrounds for black text: gradio's default palette repeats after 10 types.
PALETTE = ["#fecaca", "#bbf7d0", "#bfdbfe", "#fef08a", "#e9d5ff", "#99f6e4", "#fed7aa", "#a5f3fc", "#d9f99d",
           "#fbcfe8", "#c7d2fe", "#fde68a", "#e5e7eb", "#f5d0fe", "#bae6fd", "#d6d3d1", "#a7f3d0", "#fda4af"]


class Refusal(Exception):
    """What stops the app before it serves (no model, no such folder, code not known, pickled weights): ``main``
    prints it on one line and exits with status 2, as the project's commands do."""


def model_reference(argument: str | None = None) -> str:
    """The model to load: the argument, else ``MODEL_ID``, else the Space card's first model."""
    reference = argument or os.environ.get("MODEL_ID")
    if not reference and SPACE_CARD.is_file():
        reference = next(iter(metadata_load(SPACE_CARD).get("models") or []), None)
    if not reference:
        raise Refusal(f"app.py: no model: give --model, set MODEL_ID, or list one under models: in {SPACE_CARD}")
    return reference


def remote_code_allowed(flag: bool) -> bool:
    return flag or os.environ.get(ALLOW_VARIABLE) == "1"


def load_tagger(reference: str, allow_remote_code: bool = False):
    """The model's own token-classification pipeline (CRF decoding, character offsets) on the CPU, once its
    code is known to be the project's (the published one's, in a Space) or its running allowed."""
    folder = model_folder(reference)
    pickled = trust_helper().pickled_weights_problem(folder)  # the project's one rule, remote code allowed or not
    if pickled:
        raise Refusal(f"app.py: {reference} {pickled}")
    if not allow_remote_code:
        check_model_code(folder, reference)
    return pipeline("token-classification", model=str(folder), trust_remote_code=True, device="cpu")


def model_folder(reference: str) -> Path:
    """A local model folder, or a Hub model downloaded (to the Hub cache): the files to check and load."""
    if Path(reference).is_dir():
        return Path(reference)
    if trust_helper().looks_local(reference):
        raise Refusal(f"app.py: {reference}: no such folder")
    try:
        return Path(snapshot_download(reference))
    except (OSError, ValueError) as error:  # not found, offline, not a repository id
        raise Refusal(f"app.py: {reference}: {error}") from None


def check_model_code(folder: Path, reference: str) -> None:
    """Refuse a model whose Python code is not the known code, saying how to allow it."""
    trust = trust_helper()
    if PINNED_CODE.is_file():
        known, whose = trust.read_hashes(PINNED_CODE), f"the one published with this Space ({PINNED_CODE.name})"
    else:
        known, whose = trust.project_code(), "this project's"
    problem = trust.foreign_code(folder, known, whose)
    if problem:
        raise Refusal(f"app.py: {reference} {problem}; loading it runs that repository's Python code. Set "
                         f"{ALLOW_VARIABLE}=1 or give --trust_remote_code if you trust that code")


def trust_helper():
    """brat_ner/trust.py (or its published copy), loaded from its file: the Space has no brat_ner package."""
    spec = importlib.util.spec_from_file_location("brat_ner_trust", TRUST_HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tag(tagger, text: str, downloads: Path):
    """The four outputs for one text: highlighted entities, the entity table and the two downloads (written
    under ``downloads``)."""
    if len(text) > MAX_CHARS:
        raise gr.Error(f"The text has {len(text)} characters; this demo takes at most {MAX_CHARS}. "
                       "Use predict.py for long documents.")
    entities = tagger(text) if text.strip() else []
    rows = [[e["entity_group"], e["word"], e["start"], e["end"], round(e["score"], 3)] for e in entities]
    # Fresh files per request, as two visitors must not share one; gradio serves copies from its cache.
    folder = Path(tempfile.mkdtemp(dir=downloads))
    json_path, ann_path = folder / "entities.json", folder / "entities.ann"
    json_path.write_text(json.dumps({"text": text, "entities": entities}, ensure_ascii=False, indent=1),
                         encoding="utf-8")
    # The model's own code (its pipeline's module) writes brat, as predict.py does: one writer for both.
    brat_annotations = sys.modules[type(tagger).__module__].brat_annotations
    ann_path.write_text(brat_annotations(text, entities), encoding="utf-8", newline="")
    return {"text": text, "entities": entities}, rows, str(json_path), str(ann_path)


def build_demo(tagger, reference: str) -> gr.Blocks:
    types = sorted({label[2:] for label in tagger.model.config.id2label.values() if label != "O"})
    # Removed with the app; gradio's copies of the files go after an hour.
    downloads = tempfile.TemporaryDirectory(prefix="ner-downloads-")
    with gr.Blocks(title="Chinese medical NER (BERT-BiLSTM-CRF)", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# Chinese medical named entities\nModel: `{reference}` (BERT → BiLSTM → CRF), "
                    f"{len(types)} types: {', '.join(types)}. Paste text or pick an example.")
        text = gr.Textbox(label="Text", lines=5, max_length=MAX_CHARS, elem_id="input-text")
        submit = gr.Button("Find entities", variant="primary", elem_id="submit")
        gr.Examples(EXAMPLES, inputs=text)
        colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(types)}
        highlighted = gr.HighlightedText(label="Entities", color_map=colors, elem_id="entities")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Entities with the CRF's confidence (mean marginal "
                             "probability of their tags); end is exclusive", interactive=False, elem_id="table")
        with gr.Row():
            json_file = gr.DownloadButton("Download JSON", elem_id="download-json")
            ann_file = gr.DownloadButton("Download brat .ann", elem_id="download-ann")
        gr.Markdown("Offsets count the characters of the text box (line breaks as one `\\n`).")
        submit.click(lambda value: tag(tagger, value, Path(downloads.name)), inputs=text,
                     outputs=[highlighted, table, json_file, ann_file])
    return demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="train.py output folder or Hub id (default: MODEL_ID, then README.md)")
    parser.add_argument("--host", help="address to serve on (default: gradio's, 127.0.0.1 or GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="port (default: gradio's, 7860 or GRADIO_SERVER_PORT)")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help=f"run the model's code even when it is not the known code (or set {ALLOW_VARIABLE}=1)")
    args = parser.parse_args()
    try:
        reference = model_reference(args.model)
        tagger = load_tagger(reference, remote_code_allowed(args.trust_remote_code))
    except Refusal as refusal:
        print(refusal, file=sys.stderr)
        sys.exit(2)
    build_demo(tagger, reference).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
