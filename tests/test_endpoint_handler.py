"""The Inference Endpoint handler (endpoint/handler.py) as push_to_hub.py publishes it beside the model: it
answers with the model's own pipeline's entities, for a text and for a list of texts, and brat on request."""

import importlib.util
import json
import sys

import pytest
from transformers import pipeline

import push_to_hub
from conftest import REPO

TEXTS = ["2 型糖尿病患者应每 3 个月检测一次糖化血红蛋白（HbA1c）。",
         "二甲双胍 500 mg 每日 2 次口服，\n常见不良反应为腹泻。"]


@pytest.fixture(scope="module")
def model_repository(trained_model, tmp_path_factory):
    """The dry run's model repository, written by push_to_hub.py's own main()."""
    folder = tmp_path_factory.mktemp("endpoint") / "repo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["push_to_hub.py", "--model_dir", str(trained_model[0]), "--repo_id",
                                    "someone/chinese-medical-ner", "--dry_run", str(folder)])
        push_to_hub.main()
    return folder


@pytest.fixture(scope="module")
def handler(model_repository):
    """EndpointHandler of the repository's handler.py, created as the endpoint creates it."""
    spec = importlib.util.spec_from_file_location("endpoint_handler", model_repository / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(model_repository))


def test_repository_holds_the_handler_and_its_requirements(model_repository):
    for name in ("handler.py", "requirements.txt"):
        assert (model_repository / name).read_bytes() == (REPO / "endpoint" / name).read_bytes()
    assert '`handler.py` of this repository runs the same pipeline: it takes `{"inputs": text or [texts],' in (
        model_repository / "README.md").read_text(encoding="utf-8")  # the model card says how to call it


def test_handler_requirements_pin_the_projects_versions():
    project = dict(_pins(REPO / "requirements.txt"))
    endpoint = _pins(REPO / "endpoint" / "requirements.txt")
    assert endpoint and all(project[name] == version for name, version in endpoint)


def test_handler_returns_the_pipelines_entities_for_a_text_and_a_list(handler, model_repository):
    ner = pipeline("token-classification", model=str(model_repository), trust_remote_code=True, device="cpu")
    expected = [ner(text) for text in TEXTS]
    assert any(expected), "the model finds no entity in the test texts: nothing would be compared"
    assert handler({"inputs": TEXTS[0]}) == expected[0]
    answer = handler({"inputs": TEXTS, "parameters": {"batch_size": 2}})
    # Batched, the windows are padded to one length: the same entities, scores up to float32 reordering.
    assert [[{**entity, "score": pytest.approx(entity["score"], abs=1e-5)} for entity in entities]
            for entities in expected] == answer
    assert json.loads(json.dumps(answer)) == answer  # what the endpoint sends back
    assert handler({"inputs": []}) == []


def test_handler_writes_brat_on_request(handler):
    brat_annotations = sys.modules[type(handler.pipeline).__module__].brat_annotations
    one = handler({"inputs": TEXTS[1], "parameters": {"brat": True}})
    assert one == {"entities": handler.pipeline(TEXTS[1]), "brat": brat_annotations(TEXTS[1], one["entities"])}
    answers = handler({"inputs": TEXTS, "parameters": {"brat": True, "confidence": True}})
    assert [answer["brat"] for answer in answers] == [
        brat_annotations(text, answer["entities"], confidence=True) for text, answer in zip(TEXTS, answers)]


@pytest.mark.parametrize("request_body", [{"text": "no inputs"}, {"inputs": 7}, {"inputs": ["a", 1]}])
def test_handler_refuses_a_malformed_request(handler, request_body):
    with pytest.raises(ValueError, match='expected {"inputs": a text or a list of texts'):
        handler(request_body)


def _pins(path):
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [tuple(line.split("==")) for line in lines if line]


@pytest.mark.parametrize(("parameters", "message"), [
    ({"batch_size": 0}, "parameter 'batch_size' must be at least 1, got 0"),
    ({"batch_size": -1}, "parameter 'batch_size' must be at least 1, got -1"),
    ({"batch_size": "abc"}, """parameter 'batch_size' must be an integer, got a string "abc\""""),
    ({"batch_size": 2.5}, "parameter 'batch_size' must be an integer, got a number 2.5"),
    ({"window_chars": True}, "parameter 'window_chars' must be an integer, got a boolean true"),
    ({"context_chars": -3}, "parameter 'context_chars' must be at least 0, got -3"),
    ({"brat": "no"}, """parameter 'brat' must be true or false, got a string "no\""""),
    ({"confidence": 1}, "parameter 'confidence' must be true or false, got an integer 1"),
    ({"aggregation_strategy": "max"}, "parameter 'aggregation_strategy' must be one of 'simple', 'none', got 'max'"),
    ({"batchsize": 2}, "unknown parameter 'batchsize'; the parameters are window_chars, context_chars, batch_size,"),
    ([1], '"parameters" must be an object of names and values, got an array'),
])
def test_handler_refuses_a_parameter_of_the_wrong_name_type_or_range_naming_it(handler, parameters, message):
    """An endpoint answers a caller's mistake with an error naming the parameter (the endpoint returns a
    ValueError's message to the caller), before the pipeline runs."""
    with pytest.raises(ValueError) as refusal:
        handler({"inputs": TEXTS[0], "parameters": parameters})
    assert str(refusal.value).startswith(message), str(refusal.value)
