"""Faster CPU inference for the BERT-BiLSTM-CRF pipeline: threads, int8 weights, ONNX Runtime emissions.

    from transformers import pipeline
    from brat_ner import fast_inference

    fast_inference.set_num_threads()                     # one thread per idle core of this process's share
    tagger = pipeline("token-classification", model="outputs/ruijin", trust_remote_code=True, device="cpu")
    fast_inference.quantize_int8(tagger)                 # int8 Linear layers (torch dynamic quantisation)
    fast_inference.use_onnx(tagger, "ruijin.onnx")       # or: encoder + BiLSTM + linear in ONNX Runtime
    fast_inference.use_onnx(tagger, "ruijin-int8.onnx", int8=True)   # ONNX Runtime with int8 weights

Both keep the pipeline's windows, CRF (Viterbi and confidence scores, in torch) and entity dicts; only the
emission scores change, by int8 rounding (``quantize_int8``, ``int8=True``) or by float32 summation order
(``use_onnx``). ``predict.py`` exposes them as ``--quantize int8``, ``--onnx PATH`` (with ``--quantize int8``:
ONNX Runtime's int8) and ``--num_threads N``; ``--quantize auto`` takes int8 or bfloat16 as this CPU's
instructions favour (``choose_fast_path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from brat_ner.cli import UsageError

ONNX_FINGERPRINT_KEY = "bert_bilstm_crf_weights_sha256"
"""Metadata of an exported ONNX file: the fingerprint of the weights it was exported from, so that a file left
over from another (e.g. re-trained) model is refused instead of giving wrong entities."""


NUM_THREADS_HELP = ("CPU threads per process; default: the cores idle when the command starts, divided among the "
                    "processes of a multi-process run (more threads than idle cores slow every one of them).")


def default_num_threads() -> int:
    """The cores this process may run on that are idle now, shared among the processes of this machine under
    ``torchrun`` (its ``LOCAL_WORLD_SIZE``), at least 1. More threads than free cores make PyTorch's threads wait
    on each other (over-subscription): beside another job that keeps both cores of a 2-core machine busy,
    prediction on 2 threads ran 4x slower than alone, on 1 thread 1.5x (``benchmarks/bench_contention.py``)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    idle = idle_cores(cores)
    free = len(cores) if idle is None else min(len(cores), round(idle))
    return max(1, free // processes)


def idle_cores(cores: list[int], seconds: float = 0.2) -> float | None:
    """How many of ``cores`` sat idle over the next ``seconds`` (from Linux's ``/proc/stat``); None where that
    cannot be read (other systems), and then every core counts as free."""
    before = _cpu_times(cores)
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times(cores)
    idle = 0.0
    for core in cores:
        total = after[core][1] - before[core][1]
        idle += (after[core][0] - before[core][0]) / total if total > 0 else 1.0
    return idle


def _cpu_times(cores: list[int]) -> dict[int, tuple[int, int]] | None:
    """``{core: (idle ticks, all ticks)}`` from ``/proc/stat`` lines ``cpuN user nice system idle iowait ...``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = list(map(int, ticks))
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks[:8]))  # idle + iowait; steal included
    return times if all(core in times for core in cores) else None


def set_num_threads(num_threads: int | None = None) -> int:
    """Set PyTorch's intra-op threads (default ``default_num_threads()``) and return the number."""
    num_threads = default_num_threads() if num_threads is None else num_threads
    if num_threads < 1:
        raise UsageError(f"num_threads must be at least 1, got {num_threads}")
    torch.set_num_threads(num_threads)
    return num_threads


def quantize_int8(tagger) -> None:
    """Replace the pipeline's model by a copy whose Linear layers (BERT's, the emission layer) hold int8 weights
    and quantise their inputs on the fly (torch dynamic quantisation; CPU only), packed for ``int8_engine()``.
    The BiLSTM, about 2.5% of the multiply-adds, and the CRF stay in float32."""
    if tagger.device.type != "cpu":
        raise UsageError(f"int8 dynamic quantisation runs on the CPU only, not on {tagger.device}")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        from torch.ao.quantization import quantize_dynamic

        engine = torch.backends.quantized.engine
        # The engine chooses the kernels the weights are packed for; the packed weights keep them afterwards.
        torch.backends.quantized.engine = int8_engine()
        try:
            tagger.model = quantize_dynamic(tagger.model.float(), {nn.Linear}, dtype=torch.qint8)
        finally:
            torch.backends.quantized.engine = engine


def int8_engine() -> str:
    """oneDNN on CPUs with AMX int8 units (Xeons since Sapphire Rapids), where its int8 matrix products ran 1.7x
    as fast as the default x86 engine's (fbgemm) at BERT-base's layer sizes, and the whole pipeline 1.3x
    (benchmarks/README.md); else PyTorch's default engine."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    if amx and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return torch.backends.quantized.engine


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU as Linux lists them (``flags`` on x86, ``Features`` on Arm,
    in ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def choose_fast_path(flags: set[str]) -> tuple[str, str]:
    """``(path, reason)``: the CPU path ``--quantize auto`` takes on a CPU with these ``flags`` (``cpu_flags()``),
    ``int8``, ``bf16`` or ``float``, and why, in words for the one line that says it. The order follows what was
    measured per CPU family (benchmarks/README.md): AMX tiles run bfloat16 matrix products faster than int8
    dynamic quantisation does; without AMX, int8 dot-product instructions (VNNI) make int8 the faster; AVX2 alone
    still has int8 kernels (fbgemm) while bfloat16 without BF16 instructions is emulated, slowly."""
    if "amx_bf16" in flags:
        return "bf16", "this CPU has AMX bfloat16 tiles (amx_bf16)"
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"})
    if vnni:
        return "int8", f"this CPU has int8 dot-product instructions ({', '.join(vnni)})"
    if "avx512_bf16" in flags:
        return "bf16", "this CPU has AVX-512 bfloat16 instructions (avx512_bf16) and no int8 dot-product ones"
    if "avx2" in flags:
        return "int8", "this CPU has AVX2 int8 kernels (avx2) and no bfloat16 instructions"
    return "float", "no AMX, VNNI, AVX-512 BF16 or AVX2 flags found on this CPU, so no fast path is known to pay"


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of the model's state dict."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _EmissionNetwork(nn.Module):
    """The model's ``emissions`` (encoder + BiLSTM + linear; an ensemble's, each member's) from the ids of unpadded
    windows (no mask, so no packing). A folder saved before models had ``emissions`` (2026-12-07) is a single model
    whose pipeline reads its ``logits``, the same scores."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        if hasattr(self.model, "emissions"):
            return self.model.emissions(input_ids)
        return self.model(input_ids=input_ids).logits


def export_onnx(model, path: str | Path, int8: bool = False) -> Path:
    """Export the model's emission network to ``path`` (dynamic batch and length) for ONNX Runtime, float32 or,
    with ``int8``, with int8 weights (ONNX Runtime's dynamic quantisation of the exported graph), and the
    weights' fingerprint in the metadata (``onnx_fingerprint``). Written in a scratch folder and renamed: an
    interrupted export leaves no half-written file behind. Refuses to replace an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; export_onnx does not replace files")
    model = model.float().eval()
    example = torch.randint(0, model.config.vocab_size, (2, 8))
    dynamic = torch.export.Dim.DYNAMIC
    # The exporter swaps in an LSTM decomposition with a loop over a dynamic length, but (torch 2.13) the op's
    # dispatch cache keeps serving the kernel it resolved before: a second export in one process would unroll
    # the LSTM at the example's length and fail. Forget the cached kernels so that every export gets the loop.
    torch.ops.aten.lstm.input._dispatch_cache.clear()
    with warnings.catch_warnings(), _quiet_logger("torch.onnx._internal.exporter._registration"):
        # The exporter's notes on LSTM weights and pytree deprecations, and its registry's lines that torchvision's
        # detection ops (nms, roi_align, ...) are skipped without torchvision: no such op is in this model.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_EmissionNetwork(model), (example,), input_names=["input_ids"],
                                    output_names=["logits"], dynamic_shapes={"input_ids": {0: dynamic, 1: dynamic}},
                                    dynamo=True, verbose=False)
    # The exporter fixes the output's length to the example's (the values are right); give it the input's.
    import onnx_ir

    logits = program.model.graph.outputs[0]
    logits.shape = onnx_ir.Shape([*program.model.graph.inputs[0].shape, *logits.shape[2:]])
    program.model.metadata_props[ONNX_FINGERPRINT_KEY] = onnx_fingerprint(model, int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        partial = Path(scratch) / path.name
        program.save(partial, external_data=False)
        if int8:
            float_graph, partial = partial, Path(scratch) / f"int8.{path.name}"
            quantize_int8_graph(float_graph, partial)
        os.replace(partial, path)
    return path


INT8_ONNX_OPS = ["MatMul", "Gemm"]
"""The ops ``export_onnx`` quantises: products with constant weights, i.e. the model's Linear layers, as
``quantize_int8`` does in torch. ONNX Runtime's default also quantises the BiLSTM (DynamicQuantizeLSTM: int8 inputs
and weights at each of its steps, whose rounding the recurrence carries on) and the embedding tables (Gather, one
scale for the whole table), which moves the entities further from the float model's (docs/experiments.md, "Figures
behind the code's choices")."""


def quantize_int8_graph(float_graph: Path, int8_graph: Path) -> None:
    """ONNX Runtime's dynamic quantisation of ``float_graph``'s ``INT8_ONNX_OPS``: weights in 7 of int8's bits
    (``reduce_range``), one scale per tensor (as torch's), inputs quantised to uint8 on the fly; the metadata is
    kept. On x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC before Zen 4) ONNX Runtime multiplies uint8 inputs by
    int8 weights in pairs summed in int16, which saturates with 8-bit weights (255 * 127 * 2 > 32767): a tiny
    model's int8 emission there moved by more than int8 rounding can move it (tests/test_fast_inference.py).
    With 7 bits (255 * 63 * 2 < 32767) no sum saturates, on any CPU; torch's x86 engines avoid it the other way,
    by 7-bit inputs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its one log line asks to pre-process the graph first (symbolic shape inference, fusions), which fails on
    # this graph's LSTM loop ("Incomplete symbolic shape inference") and is not needed to quantise MatMul.
    with _quiet_logger("root", "Please consider to run pre-processing before quantization"):
        quantize_dynamic(float_graph, int8_graph, op_types_to_quantize=INT8_ONNX_OPS, weight_type=QuantType.QInt8,
                         reduce_range=True)


@contextlib.contextmanager
def _quiet_logger(name: str, message_start: str = ""):
    """Drop the warnings (and lower) of the logger ``name`` that start with ``message_start`` while in the block."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or not record.getMessage().startswith(message_start)

    logger = logging.getLogger(None if name == "root" else name)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def onnx_fingerprint(model, int8: bool) -> str:
    """What an ONNX file exported from ``model`` records: its weights' fingerprint and the precision."""
    return weights_fingerprint(model) + (" int8" if int8 else " float32")


class OnnxFileMismatch(UsageError):
    """An ONNX file exported from other weights, in another precision, or not by ``export_onnx``."""


class OnnxEmissions:
    """An exported emission network in an ONNX Runtime session: ids (B, T) -> logits (B, T, K) as torch tensors."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Its shape inference expects the example's length at the LSTM's output and warns on every other length
        # (the values are right, the tests compare them); only errors are worth a line.
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.fingerprint = self.session.get_modelmeta().custom_metadata_map.get(ONNX_FINGERPRINT_KEY)

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids.cpu().numpy()})
        return torch.from_numpy(logits)


def use_onnx(tagger, path: str | Path, num_threads: int | None = None, int8: bool = False) -> Path:
    """Run the pipeline's emission network in ONNX Runtime from ``path`` (float32, or int8 weights with ``int8``),
    exporting it there first if the file does not exist. A file exported from other weights or in the other
    precision is refused."""
    if tagger.device.type != "cpu":
        raise UsageError(f"the ONNX path runs on the CPU (ONNX Runtime's CPU provider), not on {tagger.device}")
    if getattr(tagger.model.config, "ensemble_min_votes", 0) and not hasattr(tagger.model, "emissions"):
        raise UsageError("this ensemble's code (saved before 2026-12-07) exports one emission network, the members' "
                         "average, and its votes need each member's: run it without --onnx (--quantize int8 works)")
    path = Path(path)
    if not path.exists():
        export_onnx(tagger.model, path, int8)
    emissions = OnnxEmissions(path, num_threads)
    if emissions.fingerprint != onnx_fingerprint(tagger.model.float(), int8):
        precision = "int8" if int8 else "float32"
        raise OnnxFileMismatch(f"{path} was not exported from this model's weights in {precision} (or not by this "
                         "project): delete it or give another path, and it is exported again")
    tagger.emission_network = emissions
    return path
