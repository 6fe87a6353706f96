"""The trust rule (brat_ner/trust.py) wherever a model folder is loaded or published: a folder's Python code runs
or goes public only when it is this project's own (any committed version of the modelling file) or the user
asked for it. The demo Space's side is in test_space.py."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import predict
import push_to_hub
from brat_ner import cli, trust
from conftest import REPO, predict_error

SAMPLE = REPO / "data" / "sample"
EARLIER_MODEL = REPO / "tests" / "fixtures" / "model_saved_2026_12_04"
BEFORE_THE_SPLIT = REPO / "tests" / "fixtures" / "model_saved_2026_12_07"  # the last modelling file of one file
MODEL_ID = "someone/chinese-medical-ner"


def tampered_copy(model_dir: Path, folder: Path, marker: Path) -> Path:
    """A copy of a trained folder whose modelling file also writes ``marker`` when it is imported."""
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    with open(folder / trust.MODELING_FILE, "a", encoding="utf-8") as file:
        file.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    return folder


# ----- folders of earlier versions -----


@pytest.mark.parametrize("earlier_model", [EARLIER_MODEL, BEFORE_THE_SPLIT], ids=lambda folder: folder.name)
def test_folder_saved_by_an_earlier_version_loads_without_being_asked_and_predicts_as_then(earlier_model):
    """A folder trained by an earlier version of the project runs the project's own code: predict.py loads it
    without --trust_remote_code and finds what that version found (scores up to float32 reordering). Of the two,
    one was saved on 2026-12-04 and one just before the model's code became five files (its modelling file alone)."""
    assert trust.sha256_of(earlier_model / trust.MODELING_FILE) != trust.sha256_of(REPO / trust.MODELING_FILE)
    assert sorted(path.name for path in earlier_model.glob("*.py")) == [trust.MODELING_FILE]
    expected = json.loads((earlier_model / "expected_entities.json").read_text(encoding="utf-8"))
    arguments = predict.PredictArguments(model_name_or_path=str(earlier_model), device="cpu")
    tagger = predict.load_tagger(arguments)
    texts = [(SAMPLE / f"{document_id}.txt").read_text(encoding="utf-8") for document_id in expected]
    found = dict(zip(expected, predict.tag_texts(tagger, texts, 8)))

    def exact(entities):
        return [(e["entity_group"], e["start"], e["end"], e["word"]) for e in entities]

    assert {key: exact(entities) for key, entities in found.items()} == {
        key: exact(entities) for key, entities in expected.items()}
    for key, entities in expected.items():
        assert [e["score"] for e in found[key]] == pytest.approx([e["score"] for e in entities], abs=1e-5)


def model_code_history(repository: Path = REPO) -> str | None:
    """The text of ``trust.MODEL_CODE_HISTORY`` as git's history makes it: ``SHA256  FILE`` for the working tree's
    model code, then every version of every model code file committed, newest first. None without git or with a
    shallow clone, whose history is partial."""
    git = shutil.which("git")

    def run(*arguments) -> bytes:
        return subprocess.run([git, *arguments], cwd=repository, capture_output=True, check=True).stdout

    if not git or subprocess.run([git, "rev-parse", "HEAD"], cwd=repository, capture_output=True).returncode:
        return None
    if run("rev-parse", "--is-shallow-repository").strip() == b"true":
        return None
    lines = [f"{trust.sha256_of(repository / name)}  {name}\n" for name in sorted(trust.MODEL_CODE_FILES)]
    for commit in run("log", "--format=%H", "--", *trust.MODEL_CODE_FILES).decode().split():
        for name in sorted(run("ls-tree", "--name-only", commit, "--", *trust.MODEL_CODE_FILES).decode().split()):
            lines.append(f"{hashlib.sha256(run('show', f'{commit}:{name}')).hexdigest()}  {name}\n")
    header = trust.MODEL_CODE_HISTORY.read_text(encoding="utf-8").partition("\n\n")[0]
    return header + "\n\n" + "".join(dict.fromkeys(lines))


def test_history_is_the_model_code_git_committed():
    """The history of accepted model code is derived from git's: every committed version of every file of the
    model's code, and the working tree's, and nothing else (``PYTHONPATH=. python tests/test_trust.py`` writes it
    anew). A pip install without git reads the file; a commit that changes the model's code brings its line."""
    derived = model_code_history()
    if derived is None:
        pytest.skip("no git history here (not a git checkout, or a shallow clone)")
    def entries(text: str) -> set[str]:
        return {line for line in text.splitlines() if line and not line.startswith("#")}

    assert entries(trust.MODEL_CODE_HISTORY.read_text(encoding="utf-8")) == entries(derived), (
        f"run `PYTHONPATH=. python tests/test_trust.py` to write {trust.MODEL_CODE_HISTORY} from git's history")


def test_history_keeps_every_version_accepted_before():
    """Every version of the modelling file accepted before the history was derived from git (the hand-kept list
    of 2026-12-06, its 38 sha256) is accepted still, the 2026-12-04 fixture's among them."""
    history = trust.read_hashes(trust.MODEL_CODE_HISTORY)[trust.MODELING_FILE]
    assert len(history) >= 38 and trust.sha256_of(EARLIER_MODEL / trust.MODELING_FILE) in history
    assert "1658ded6dd2d1bc7c91b12764eee75e75f09e573ea8860a96ac65bbd2dffd9b5" in history  # the first, 2026-11-24


def test_every_file_that_save_pretrained_writes_is_model_code(tmp_path):
    """The files of the model's code that travel (the modelling file and its relative imports, copied by
    ``save_pretrained``) are the ones the trust rule knows, and a tampered copy of any of them is refused."""
    from conftest import tiny_model

    tiny_model().save_pretrained(tmp_path / "model")
    assert sorted(path.name for path in (tmp_path / "model").glob("*.py")) == sorted(trust.MODEL_CODE_FILES)
    assert trust.foreign_code(tmp_path / "model", trust.project_code()) is None
    for name in trust.MODEL_CODE_FILES:
        tampered = tmp_path / f"tampered_{name}"
        shutil.copytree(tmp_path / "model", tampered)
        with open(tampered / name, "a", encoding="utf-8") as file:
            file.write("\nprint('ran')\n")
        assert trust.foreign_code(tampered, trust.project_code()) == (
            f"holds a {name} that differs from this project's")


# ----- predict.py: a mistyped path -----


@pytest.mark.parametrize("path", ["tests/no_such_model", "./no_such_model", "no_such_folder/model/"])
def test_mistyped_local_path_is_no_such_folder(path, monkeypatch, capsys):
    """A path that looks local and is not there: "no such folder", not advice to trust remote code."""
    message = predict_error(monkeypatch, capsys, "--model_name_or_path", path, "--input_file",
                            str(SAMPLE / "01.txt"), model_loads=False).strip()
    assert message == f"predict.py: {path}: no such folder"


def test_only_a_hub_id_gets_the_remote_code_advice(monkeypatch, capsys):
    message = predict_error(monkeypatch, capsys, "--model_name_or_path", MODEL_ID, "--input_file",
                            str(SAMPLE / "01.txt"), model_loads=False).strip()
    assert message.startswith(f"predict.py: {MODEL_ID} is not a local folder (a Hub repository?)")
    assert message.endswith("Add --trust_remote_code if you trust that code")


# ----- the notebook -----


def test_notebook_refuses_a_tampered_model_folder(trained_model, tmp_path, monkeypatch):
    """notebooks/explore.ipynb loads NER_MODEL_DIR through the trust helper: a folder whose code is not the
    project's stops the prediction cell before that code runs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("NER_MODEL_DIR", str(tampered_copy(trained_model[0], tmp_path / "tampered_notebook", marker)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    notebook_path = REPO / "notebooks" / "explore.ipynb"
    client = NotebookClient(nbformat.read(notebook_path, as_version=4), kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(notebook_path.parent)}})
    with pytest.raises(CellExecutionError, match=f"holds a {trust.MODELING_FILE} that differs from this project's"):
        client.execute()
    assert not marker.exists()


# ----- push_to_hub.py -----


def push_to_hub_main(monkeypatch, *arguments) -> None:
    """push_to_hub.py's command line in this process, ended as ``python push_to_hub.py`` ends it."""
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["push_to_hub.py", *arguments])
        cli.run_main(push_to_hub.main, "push_to_hub.py")


def test_push_refuses_a_tampered_folder_unless_asked_and_lists_what_it_uploads(trained_model, tmp_path,
                                                                              monkeypatch, capsys):
    model_dir, _ = trained_model
    marker = tmp_path / "ran.txt"
    tampered = tampered_copy(model_dir, tmp_path / "tampered_push", marker)
    out = tmp_path / "repo"
    arguments = ("--model_dir", str(tampered), "--repo_id", MODEL_ID, "--space_id", f"{MODEL_ID}-demo",
                 "--dry_run", str(out))
    with pytest.raises(SystemExit) as refusal:
        push_to_hub_main(monkeypatch, *arguments)
    error = capsys.readouterr().err
    assert refusal.value.code == 2 and error.count("\n") == 1
    assert error.startswith(f"push_to_hub.py: {tampered} holds a {trust.MODELING_FILE} that differs from this "
                            "project's") and "--trust_remote_code" in error
    assert not out.exists()

    push_to_hub_main(monkeypatch, *arguments, "--trust_remote_code")
    printed = capsys.readouterr().out
    uploaded = ", ".join(sorted(path.name for path in out.iterdir() if path.is_file()))
    assert f"Wrote the repository folder to {out} (nothing uploaded): {uploaded}" in printed
    assert trust.MODELING_FILE in uploaded and trust.HANDLER_FILE in uploaded
    assert (out / trust.MODELING_FILE).read_bytes() == (tampered / trust.MODELING_FILE).read_bytes()
    # The Space published with it runs that code, which its uploader vouched for, and no other.
    pinned = trust.read_hashes(out / "space" / push_to_hub.SPACE_PINNED_CODE)
    assert pinned == {**{name: {trust.sha256_of(tampered / name)} for name in trust.MODEL_CODE_FILES},
                      trust.HANDLER_FILE: {trust.sha256_of(REPO / "endpoint" / trust.HANDLER_FILE)}}
    assert not marker.exists()  # publishing never runs it


def test_published_folder_is_the_projects_own_code(trained_model, tmp_path, monkeypatch):
    """What push_to_hub.py writes (the model file and the endpoint handler) loads without being asked."""
    model_dir, _ = trained_model
    out = tmp_path / "repo"
    push_to_hub_main(monkeypatch, "--model_dir", str(model_dir), "--repo_id", MODEL_ID, "--dry_run", str(out))
    assert (out / trust.HANDLER_FILE).is_file() and trust.trust_remote_code(str(out), asked=False)


if __name__ == "__main__":  # PYTHONPATH=. python tests/test_trust.py: the history of the model's code, from git's
    trust.MODEL_CODE_HISTORY.write_text(model_code_history(), encoding="utf-8")
