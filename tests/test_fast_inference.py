"""Fast CPU inference: direct CRF marginals, windows batched by length, int8, ONNX, threads, several processes."""

import json
import math
import os

import pytest
import torch
from transformers import AutoTokenizer

import crf as crf_module
import predict
from brat_ner import fast_inference
from configuration_bert_bilstm_crf import BertBiLstmCrfConfig
from conftest import REPO, TINY_BERT, predict_error, run_predict, run_script, small_training
from crf import CRF
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification
from pipeline_bert_bilstm_crf import BertBiLstmCrfNerPipeline

SAMPLE = REPO / "data" / "sample"
SAMPLE_TEXTS = [path.read_text(encoding="utf-8") for path in sorted(SAMPLE.glob("*.txt"))]
TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]


def load_pipeline(model_dir) -> BertBiLstmCrfNerPipeline:
    """The pipeline of this checkout's modeling file (the tests patch it), from a trained model's folder."""
    model = BertBiLstmCrfForTokenClassification.from_pretrained(model_dir).eval()
    return BertBiLstmCrfNerPipeline(model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), device="cpu")


def entity_keys(results):
    return [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in entities] for entities in results]


def assert_same_entities_and_scores(results, expected, atol):
    assert entity_keys(results) == entity_keys(expected)
    scores = [e["score"] for entities in results for e in entities]
    torch.testing.assert_close(scores, [e["score"] for entities in expected for e in entities], atol=atol, rtol=0)


@pytest.fixture
def threads():
    """Restores torch's thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("batch_first", [True, False])
def test_direct_marginals_equal_the_gradient_of_log_z(monkeypatch, batch_first):
    """Forward-backward without autograd (CPU) against autograd through the parallel tree, with holes, an invisible
    first position, an all-invisible row and hard (-1e4) transitions; float64."""
    torch.manual_seed(0)
    crf = CRF(7, batch_first=batch_first).double()
    torch.nn.init.normal_(crf.transitions, std=3.0)
    with torch.no_grad():
        crf.transitions[2, 5] = -1e4
    emissions = torch.randn(5, 23, 7, dtype=torch.float64) * 4
    mask = torch.rand(5, 23) > 0.3
    mask[2], mask[3, 0] = False, False
    if not batch_first:
        emissions, mask = emissions.transpose(0, 1), mask.T
    direct = crf.marginals(emissions, mask)
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: True)
    by_autograd = crf.marginals(emissions, mask)
    # float64 (eps 2e-16): two orders of summing 23 steps of log-sum-exp differ by ~1e-14; a wrong term moves a
    # marginal by far more than these bounds.
    torch.testing.assert_close(direct, by_autograd, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(direct.sum(-1), mask.double())


def test_windows_of_one_length_give_the_padded_batch_logits():
    """Each length run without padding (no packing) gives the logits of the padded, packed batch."""
    torch.manual_seed(0)
    tiny_bert = REPO / "configs" / "tiny-bert"
    config = BertBiLstmCrfConfig.from_pretrained(tiny_bert, num_labels=5, lstm_hidden_size=16)
    model = BertBiLstmCrfForTokenClassification(config).eval()
    tagger = BertBiLstmCrfNerPipeline(model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_bert), device="cpu")
    lengths = torch.tensor([12, 5, 12, 9, 5])
    attention_mask = (torch.arange(12) < lengths[:, None]).long()
    input_ids = torch.randint(5, config.vocab_size, (5, 12)) * attention_mask
    with torch.no_grad():
        padded = model(input_ids, attention_mask=attention_mask).logits
        by_length = tagger._emissions_by_length(input_ids, attention_mask)
    visible = attention_mask.bool()
    # float32 (eps 1.2e-7): the same sums over 64-wide layers in another blocking differ by ~1e-6 of the logits'
    # size (~1); a padding position leaking into a window would move them by the size of an attention weight.
    torch.testing.assert_close(by_length[visible], padded[visible], atol=1e-5, rtol=1e-5)
    assert (by_length[~visible] == 0).all()


def test_pipeline_matches_the_unbatched_autograd_reference(trained_model, monkeypatch):
    """Windows of many lengths in batches of 8 (direct marginals, length groups) against one window at a time
    with the tree's autograd marginals and chunked Viterbi: the same entities and scores."""
    model_dir, _ = trained_model
    tagger = load_pipeline(model_dir)
    fast = list(tagger(SAMPLE_TEXTS, batch_size=8, window_chars=25))
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: True)
    reference = list(tagger(SAMPLE_TEXTS, batch_size=1, window_chars=25))
    assert sum(map(len, reference)) > 100
    # Scores are float32 probabilities from two algorithms (forward-backward, autograd of log Z): ~1e-6 apart.
    assert_same_entities_and_scores(fast, reference, atol=1e-5)


@pytest.fixture(scope="module")
def onnx_file(trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    return fast_inference.export_onnx(load_pipeline(model_dir).model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_onnx_path_gives_the_float_pipeline_entities(trained_model, onnx_file):
    import onnx

    onnx.checker.check_model(str(onnx_file))
    model_dir, _ = trained_model
    tagger = load_pipeline(model_dir)
    expected = list(tagger(SAMPLE_TEXTS, batch_size=8))
    fast_inference.use_onnx(tagger, onnx_file)
    fed, network = [], tagger.emission_network
    tagger.emission_network = lambda input_ids: fed.append(input_ids) or network(input_ids)
    # float32 in another library: sums in another order, so scores agree to ~1e-6, not bit for bit; with windows
    # packed across texts (the default) and in input order alike.
    assert_same_entities_and_scores(list(tagger(SAMPLE_TEXTS, batch_size=8)), expected, atol=1e-4)
    assert_same_entities_and_scores(list(tagger(SAMPLE_TEXTS, batch_size=8, pack_windows=0)), expected, atol=1e-4)
    # The network takes no attention mask: every batch it gets holds windows of one length, [SEP] last in each.
    assert any(len(ids) > 1 for ids in fed)
    assert all(bool((ids[:, -1] == tagger.tokenizer.sep_token_id).all()) for ids in fed)


def test_onnx_file_of_other_weights_or_precision_is_refused_and_never_replaced(trained_model, onnx_file, threads,
                                                                                monkeypatch, capsys):
    model_dir, _ = trained_model
    tagger = load_pipeline(model_dir)
    with pytest.raises(fast_inference.OnnxFileMismatch, match="not exported from this model's weights in int8"):
        fast_inference.use_onnx(tagger, onnx_file, int8=True)
    message = predict_error(monkeypatch, capsys, "--model_name_or_path", str(model_dir), "--input_dir", str(SAMPLE),
                            "--onnx", str(onnx_file), "--quantize", "int8")
    assert message.splitlines()[-1].startswith(f"predict.py: {onnx_file} was not exported")  # after the progress bars
    with torch.no_grad():
        tagger.model.classifier.bias += 1.0
    with pytest.raises(fast_inference.OnnxFileMismatch, match="not exported from this model's weights in float32"):
        fast_inference.use_onnx(tagger, onnx_file)
    with pytest.raises(FileExistsError):
        fast_inference.export_onnx(tagger.model, onnx_file)
    assert tagger.emission_network is None


INT8_WEIGHT_LEVELS = {"torch": 127, "onnx": 63}
"""The largest int8 weight of each runtime: torch uses int8's 8 bits, ``export_onnx`` 7 (``reduce_range``)."""


def int8_rounding_bound(inputs: torch.Tensor, weight: torch.Tensor, weight_levels: int) -> torch.Tensor:
    """The most that int8 rounding can move each output of a Linear layer with ``weight`` (out, in) on ``inputs``
    (..., in) of one call, from the quantisation steps of both, whatever the CPU's kernels:

    - weights: one symmetric scale per tensor, |W|max / 127.5 in torch and ONNX Runtime (per-channel scales are
      finer), |W|max / 64 with ONNX Runtime's 7 bits; the step is taken as |W|max / ``weight_levels`` (127 or 63)
      and each weight is off by at most half of it;
    - inputs: one scale per call over their range widened to include 0, in 8 bits (uint8), or 7 in torch's
      fbgemm/x86 engines (reduce_range); the step is taken as that range / 127, and each input is off by at most
      one step (half a step, and half a step more where the zero point's rounding shifts the grid).

    |W'x' - Wx| <= sum_j |W'_ij - W_ij| |x_j| + sum_j |W'_ij| |x'_j - x_j|, every rounding error at its worst and
    all of one sign: far beyond float32's summation-order differences (~1e-6), which it therefore covers."""
    inputs, weight = inputs.double(), weight.double()
    weight_step = weight.abs().max() / weight_levels
    input_step = (inputs.max().clamp(min=0) - inputs.min().clamp(max=0)) / 127
    return weight_step / 2 * inputs.abs().sum(-1, keepdim=True) + input_step * (weight.abs() + weight_step / 2).sum(-1)


def save_model(model, folder):
    """A model folder as predict.py loads it: weights, this checkout's modeling file and the tiny tokenizer."""
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(TINY_BERT).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bilstm_model(tmp_path_factory):
    """Random weights (seed 0) with a single Linear layer, the emission layer: a BERT without layers (embeddings
    and LayerNorm), the BiLSTM, the emission layer. int8 rounds that layer only, so its emissions are within
    ``int8_rounding_bound`` of the float BiLSTM's outputs on any CPU; rounding anywhere else (an int8 BiLSTM or
    embedding table) or a broken int8 layer shows as emissions beyond it."""
    torch.manual_seed(0)
    config = BertBiLstmCrfConfig.from_pretrained(TINY_BERT, num_hidden_layers=0, num_labels=5,
                                                          lstm_hidden_size=16, window_chars=62)
    model = BertBiLstmCrfForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # emissions of order 1, not 0.02 (the initializer's std)
    return save_model(model, tmp_path_factory.mktemp("bilstm") / "model")


@pytest.fixture(scope="module")
def margin_model(tmp_path_factory):
    """Known weights whose every tag has a margin: no BiLSTM, no BERT layer, each character's embedding (all
    others zero) one of 5 orthogonal +-1 rows of a 64x64 Hadamard matrix, which the LayerNorm keeps (mean 0, std
    1), the emission layer those 5 rows: 64 for the character's class, 0 for the others, and a CRF without
    transitions, so that each character's tag is its emissions' argmax, the class of its id modulo 5."""
    labels = ["O", "B-Disease", "I-Disease", "B-Drug", "I-Drug"]
    config = BertBiLstmCrfConfig.from_pretrained(TINY_BERT, num_hidden_layers=0, use_lstm=False,
                                                          window_chars=62, id2label=dict(enumerate(labels)),
                                                          label2id={label: i for i, label in enumerate(labels)})
    model = BertBiLstmCrfForTokenClassification(config).eval()
    hadamard = torch.ones(1, 1)
    while hadamard.shape[0] < config.hidden_size:
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
    classes = hadamard[1 : 1 + len(labels)]  # row 0, all ones, has mean 1: the LayerNorm would erase it
    with torch.no_grad():
        for parameter in [*model.bert.embeddings.parameters(), *model.crf.parameters(), model.classifier.bias]:
            parameter.zero_()
        model.bert.embeddings.LayerNorm.weight.fill_(1.0)
        model.bert.embeddings.word_embeddings.weight.copy_(classes[torch.arange(config.vocab_size) % len(labels)])
        model.classifier.weight.copy_(classes)
    return save_model(model, tmp_path_factory.mktemp("margin") / "model")


def test_bf16_packed_windows_give_the_float_entities_where_every_tag_has_a_margin(margin_model):
    """predict.py's --bf16 with windows packed across texts and padded per batch: every emission of the margin
    model (sums of +-1) is exact in bfloat16, so the entities are the float pipeline's."""
    float_tagger, tagger = load_pipeline(margin_model), load_pipeline(margin_model)
    tagger.model.to(torch.bfloat16)
    results = tagger(SAMPLE_TEXTS, batch_size=8)
    assert entity_keys(results) == entity_keys(float_tagger(SAMPLE_TEXTS, batch_size=8, pack_windows=0))
    assert sum(map(len, results)) > 100


def int8_tagger(model_dir, runtime, tmp_path):
    """predict.py's --quantize int8 (torch's dynamic quantisation; with --onnx, ONNX Runtime's) on one thread."""
    onnx_path = tmp_path / "int8.onnx" if runtime == "onnx" else None
    tagger = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), quantize="int8",
                                                          onnx=onnx_path and str(onnx_path), num_threads=1))
    assert torch.get_num_threads() == 1 and tagger.device.type == "cpu"
    if runtime == "onnx":
        assert isinstance(tagger.emission_network, fast_inference.OnnxEmissions)
        assert tagger.emission_network.fingerprint.endswith(" int8")
    else:
        assert not any(type(module) is torch.nn.Linear for module in tagger.model.modules())
    return tagger


def emissions_and_bounds(float_tagger, int8_tagger, runtime, text):
    """The float and int8 emissions of ``text``'s windows, one window per call as the pipeline runs them, and
    the int8 rounding bound of each (the float emission layer's inputs)."""
    layer_inputs = []
    hook = float_tagger.model.classifier.register_forward_hook(lambda layer, args, output: layer_inputs.append(args[0]))
    rows = []
    for window in float_tagger.preprocess(text):
        visible = window["crf_mask"][0]
        ids, mask = window["input_ids"], window["attention_mask"]
        float_emissions = float_tagger._emissions_by_length(ids, mask)[0]
        bound = int8_rounding_bound(layer_inputs.pop(), float_tagger.model.classifier.weight,
                                    INT8_WEIGHT_LEVELS[runtime])[0]
        rows.append((float_emissions[visible], int8_tagger._emissions_by_length(ids, mask)[0][visible], bound[visible]))
    hook.remove()
    return [torch.cat(parts) for parts in zip(*rows)]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_int8_emissions_stay_within_the_rounding_bound(bilstm_model, tmp_path, threads, runtime):
    """Every int8 emission of the sample is within ``int8_rounding_bound`` of the float one, and some differ.
    ONNX Runtime's default quantisation (the BiLSTM and the embeddings in int8 too, 8-bit weights) went 2.2x
    beyond it; the emission layer's weight scale set to 0 went 13-15x beyond it in both runtimes."""
    float_tagger = load_pipeline(bilstm_model)
    tagger = int8_tagger(bilstm_model, runtime, tmp_path)
    text = "".join(SAMPLE_TEXTS)[:2000]
    float_emissions, int8_emissions, bound = emissions_and_bounds(float_tagger, tagger, runtime, text)
    error = (int8_emissions - float_emissions).abs().double()
    assert error.max() > 0 and bool((error <= bound).all()), f"{(error / bound).max():.2f} x the bound"


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_int8_entities_are_the_float_ones_where_every_tag_has_a_margin(margin_model, tmp_path, threads, runtime):
    """Where each tag's emission beats every other tag's by more than both their rounding bounds, int8 cannot
    change a tag, so the entities a user sees are the float pipeline's, with exact offsets into each text."""
    float_tagger = load_pipeline(margin_model)
    tagger = int8_tagger(margin_model, runtime, tmp_path)
    for text in SAMPLE_TEXTS:
        emissions, _, bound = emissions_and_bounds(float_tagger, tagger, runtime, text)
        # The model's promise, checked: every tag's margin exceeds the bound (a batch of windows has the same
        # bound as each window: every character's LayerNorm output is +-1, so every call's input range is [-1, 1]).
        best = emissions.argmax(-1, keepdim=True)
        margin = emissions.gather(-1, best) - emissions - bound.gather(-1, best) - bound
        assert bool((margin.scatter(-1, best, math.inf) > 0).all())
    results = list(tagger(SAMPLE_TEXTS, batch_size=8))
    assert entity_keys(results) == entity_keys(float_tagger(SAMPLE_TEXTS, batch_size=8))
    assert sum(map(len, results)) > 100
    for text, entities in zip(SAMPLE_TEXTS, results):
        assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)


def test_threads_default_to_the_idle_cores_shared_between_processes_and_bad_flags_are_refused(monkeypatch, capsys):
    cores = len(os.sched_getaffinity(0))
    idle = fast_inference.idle_cores(sorted(os.sched_getaffinity(0)), seconds=0.05)
    # Read from this machine's /proc/stat: a sum of per-core idle fractions, each at most 1 (+ float rounding).
    assert idle is not None and 0 <= idle <= cores + 1e-9
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(fast_inference, "idle_cores", lambda cores: float(len(cores)))  # a quiet machine
    assert fast_inference.default_num_threads() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert fast_inference.default_num_threads() == max(1, cores // 2)
    monkeypatch.setattr(fast_inference, "idle_cores", lambda cores: 0.1)  # another job keeps every core busy
    assert fast_inference.default_num_threads() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(fast_inference, "idle_cores", lambda cores: None)  # no /proc/stat: every core counts
    assert fast_inference.default_num_threads() == cores
    refused = predict_error(monkeypatch, capsys, "--model_name_or_path", "unused", "--input_dir", str(SAMPLE),
                            "--num_threads", "0", model_loads=False)
    assert "--num_threads must be at least 1, got 0" in refused
    refused = predict_error(monkeypatch, capsys, "--model_name_or_path", "unused", "--input_dir", str(SAMPLE),
                            "--quantize", "int8", "--device", "cuda", model_loads=False)
    assert "--quantize and --onnx run on the CPU, not on --device cuda" in refused


def test_predict_in_two_processes_writes_what_one_process_writes(trained_model, tmp_path):
    """torchrun with two CPU processes: each tags its share, every .ann is written once and equals the one-process
    output, and the scores over all documents are gathered on the main process."""
    model_dir, _ = trained_model
    output_dir = tmp_path / "two"
    completed = run_script([*TORCHRUN, "predict.py", "--model_name_or_path", str(model_dir), "--input_dir",
                            str(SAMPLE), "--gold_dir", str(SAMPLE), "--output_dir", str(output_dir)])
    documents = predict.read_texts(SAMPLE)
    assert "Process 1 of 2 tagged 4 documents" in completed.stdout
    assert "Process 2 of 2 tagged 4 documents" in completed.stdout
    tagger = predict.load_tagger(predict.PredictArguments(model_name_or_path=str(model_dir), device="cpu"))
    predictions = dict(zip(documents, predict.tag_texts(tagger, list(documents.values()), 32)))
    for document_id, text in documents.items():
        written = (output_dir / f"{document_id}.ann").read_text(encoding="utf-8")
        assert written == predict.brat_annotations(text, predictions[document_id])
    gold = predict.ruijin_ner.read_corpus_documents(SAMPLE)
    reports = predict.score_against_gold(gold, predictions)
    for stem, rule in (("brat_scores", "strict"), ("brat_scores_overlap", "overlap")):
        written = json.loads((output_dir / f"{stem}.json").read_text(encoding="utf-8"))
        assert written == json.loads(json.dumps(reports[rule]))


def test_training_in_two_processes_shares_every_batch(tmp_path):
    """torchrun with two CPU processes (gloo): each optimizer step covers two per-process batches, so an epoch has
    half the steps of one process; the saved model loads and tags."""
    output_dir = tmp_path / "model"
    run_script([*TORCHRUN, *small_training(output_dir)])
    corpus = json.loads((output_dir / "corpus.json").read_text(encoding="utf-8"))
    last_checkpoint = max(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last_checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    windows, epochs, per_process_batch = corpus["splits"]["train"]["windows"], 3, 8
    assert state["global_step"] == epochs * math.ceil(windows / (2 * per_process_batch))
    assert state["global_step"] < epochs * math.ceil(windows / per_process_batch)
    entities = load_pipeline(output_dir)(SAMPLE_TEXTS[0])
    assert all(SAMPLE_TEXTS[0][e["start"] : e["end"]] == e["word"] for e in entities)


@pytest.mark.parametrize("engine", [name for name in ("x86", "fbgemm", "onednn")
                                    if name in torch.backends.quantized.supported_engines])
def test_int8_works_with_each_engine_and_leaves_the_global_engine_alone(trained_model, monkeypatch, threads, engine):
    """``quantize_int8`` packs the weights for ``int8_engine()`` (oneDNN on CPUs with AMX, else the default); with
    each engine, every int8 Linear layer of the trained model (BERT's and the emission layer), fed what it is fed
    in the int8 model, stays within ``int8_rounding_bound`` of its float layer on the same inputs, and the
    process's engine setting is restored."""
    model_dir, _ = trained_model
    assert fast_inference.int8_engine() in torch.backends.quantized.supported_engines
    monkeypatch.setattr(fast_inference, "int8_engine", lambda: engine)
    before = torch.backends.quantized.engine
    float_layers = dict(load_pipeline(model_dir).model.named_modules())
    tagger = load_pipeline(model_dir)
    fast_inference.quantize_int8(tagger)
    assert torch.backends.quantized.engine == before
    calls = []
    for name, layer in tagger.model.named_modules():
        if type(layer) is torch.ao.nn.quantized.dynamic.Linear:
            layer.register_forward_hook(lambda layer, args, output, name=name: calls.append((name, args[0], output)))
    input_ids = torch.tensor([[101, *range(5, 60), 102]])
    tagger._emissions_by_length(input_ids, torch.ones_like(input_ids))
    assert len(calls) == sum(type(layer) is torch.nn.Linear for layer in float_layers.values())
    for name, inputs, output in calls:
        float_layer = float_layers[name]
        error = (output - float_layer(inputs)).abs().double()
        bound = int8_rounding_bound(inputs, float_layer.weight, INT8_WEIGHT_LEVELS["torch"])
        assert error.max() > 0 and bool((error <= bound).all()), f"{name}: {(error / bound).max():.2f} x the bound"


# Flags as /proc/cpuinfo lists them, cut to what matters: a Xeon with AMX (Sapphire Rapids on), an EPYC with
# AVX-512 VNNI and BF16 (Zen 4), an older EPYC (Zen 2: AVX2 only), an Arm server, and an unreadable cpuinfo.
CPU_FLAGS = {
    "xeon-amx": {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"},
    "epyc-zen4": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"},
    "epyc-zen2": {"avx", "avx2", "fma"},
    "arm": {"fp", "asimd", "asimddp", "bf16"},
    "unknown": set(),
}


@pytest.mark.parametrize("cpu, expected", [("xeon-amx", "bf16"), ("epyc-zen4", "int8"), ("epyc-zen2", "int8"),
                                           ("arm", "float"), ("unknown", "float")])
def test_quantize_auto_takes_the_path_the_cpu_flags_favour(trained_model, threads, cpu, expected):
    model_dir, _ = trained_model
    flags = CPU_FLAGS[cpu]
    path, reason = fast_inference.choose_fast_path(flags)
    assert path == expected and reason
    assert all(fast_inference.choose_fast_path(set(flags)) == (path, reason) for _ in range(3))  # deterministic
    args = predict.PredictArguments(model_name_or_path=str(model_dir), quantize="auto", num_threads=1)
    predict.take_cpu_fast_path(args, flags)
    tagger = predict.load_tagger(args, "cpu")
    int8_layers = any(type(layer) is torch.ao.nn.quantized.dynamic.Linear for layer in tagger.model.modules())
    assert int8_layers == (expected == "int8")
    if expected != "int8":
        assert tagger.model.classifier.weight.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    entities = tagger(SAMPLE_TEXTS[0])
    assert entities and all(SAMPLE_TEXTS[0][e["start"]:e["end"]] == e["word"] for e in entities)


def test_quantize_auto_says_its_choice_in_one_line_and_leaves_onnx_int8_or_float(trained_model, monkeypatch, capsys,
                                                                                   threads, tmp_path):
    model_dir, _ = trained_model
    monkeypatch.setattr(fast_inference, "cpu_flags", lambda: CPU_FLAGS["epyc-zen4"])
    run_predict(monkeypatch, "--model_name_or_path", str(model_dir), "--input_file", str(SAMPLE / "01.txt"),
                "--quantize", "auto", "--num_threads", "1")
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if line.startswith("predict.py: --quantize auto")]
    assert said == ["predict.py: --quantize auto: int8 (this CPU has int8 dot-product instructions (avx512_vnni))"]
    assert json.loads(captured.out)  # the entities, on standard output alone
    args = predict.PredictArguments(model_name_or_path=str(model_dir), quantize="auto", onnx=str(tmp_path / "m.onnx"))
    predict.take_cpu_fast_path(args, CPU_FLAGS["xeon-amx"])
    assert (args.quantize, args.bf16) == (None, False)  # ONNX runs float32 where bf16 is favoured
    refused = predict_error(monkeypatch, capsys, "--model_name_or_path", str(model_dir), "--input_file",
                            str(SAMPLE / "01.txt"), "--quantize", "auto", "--bf16", "true", model_loads=False)
    assert "give it or --bf16, not both" in refused


def test_cpu_flags_are_read_from_this_machine():
    flags = fast_inference.cpu_flags()
    assert isinstance(flags, set)
    if os.path.exists("/proc/cpuinfo") and os.uname().machine in ("x86_64", "aarch64"):
        assert flags & {"sse2", "fp"}  # every x86-64 CPU has SSE2; every Arm64 Linux lists fp
