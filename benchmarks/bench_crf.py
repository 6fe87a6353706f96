"""Speed of the project's CRF and of whole training / inference steps, side by side, in one run.

1. CRF alone: log-likelihood forward + backward and Viterbi decode, this project's ``CRF`` against pytorch-crf's
   ``torchcrf.CRF`` with the same parameters (loaded through the state dict), random lengths.
2. A training step (forward + backward + AdamW step) of BERT + softmax (``BertForTokenClassification``), BERT + CRF
   and BERT + BiLSTM + CRF, the latter also with pytorch-crf swapped in; random weights, tokens and labels.
3. Inference: the CRF models' ``decode`` against the softmax model's argmax.

Times are medians over ``--repeats`` runs after ``--warmup`` runs (CUDA events on the GPU). On CUDA the models run
under bf16 autocast with SDPA attention and the peak GPU memory of each is reported.

    python benchmarks/bench_crf.py --device cpu --tiny             # a quick look on a CPU
    python benchmarks/bench_crf.py --device cuda --batch_size 32 --seq_len 512
"""

import argparse
import contextlib
import datetime
import functools
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchcrf
import transformers
from transformers import BertConfig, BertForTokenClassification

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configuration_bert_bilstm_crf import BertBiLstmCrfConfig  # noqa: E402
from crf import CRF  # noqa: E402
from modeling_bert_bilstm_crf import BertBiLstmCrfForTokenClassification  # noqa: E402

DEFAULT_BERT_CONFIG = REPO.parent / "shared" / "data" / "bert-base-chinese" / "config.json"
TINY_BERT = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
CLS, SEP = 101, 102


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bert_config", default=str(DEFAULT_BERT_CONFIG) if DEFAULT_BERT_CONFIG.is_file() else None,
                        help="BERT config.json (default: bert-base-chinese's if present, else BertConfig(), "
                             "i.e. BERT-base)")
    parser.add_argument("--tiny", action="store_true", help=f"a small BERT for quick CPU runs: {TINY_BERT}")
    parser.add_argument("--batch_size", type=int, default=32, help="model steps")
    parser.add_argument("--seq_len", type=int, default=128, help="model steps, including [CLS] and [SEP]")
    parser.add_argument("--lstm_hidden_size", type=int, default=256)
    parser.add_argument("--num_tags", type=int, default=31, help="31 = BIO over the Ruijin corpus' 15 types")
    parser.add_argument("--crf_batch_size", type=int, default=32)
    parser.add_argument("--crf_seq_lens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip_crf", action="store_true", help="only the model steps")
    parser.add_argument("--skip_models", action="store_true", help="only the CRF part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the results to this JSON file")
    return parser.parse_args(argv)


# ----- timing -----


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(functions, device, repeats, warmup):
    """Median wall time in milliseconds of each of ``functions`` (a dict of name -> callable; CUDA events on the
    GPU). The functions take turns within every repetition, so that a busy machine slows them alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    synchronize(device)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(elapsed_ms(function, device))
    return {name: statistics.median(values) for name, values in times.items()}


def elapsed_ms(function, device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000


def autocast(device):
    """bf16 autocast on CUDA (as training runs there), none on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----- 1. CRF alone -----


def crf_pair(num_tags, device):
    """pytorch-crf's CRF with N(0, 1) parameters and ours with the same state dict."""
    reference = torchcrf.CRF(num_tags, batch_first=True)
    for param in reference.parameters():
        torch.nn.init.normal_(param)
    ours = CRF(num_tags, batch_first=True)
    ours.load_state_dict(reference.state_dict())
    return ours.to(device), reference.to(device)


def crf_batch(batch, seq_len, num_tags, device):
    """Random emissions and tags, lengths uniform in [seq_len / 2, seq_len] (one full), prefix masks."""
    emissions = torch.randn(batch, seq_len, num_tags, device=device, requires_grad=True)
    tags = torch.randint(num_tags, (batch, seq_len), device=device)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch,), device=device)
    lengths[0] = seq_len
    mask = torch.arange(seq_len, device=device) < lengths.unsqueeze(1)
    return emissions, tags, mask


def bench_crf(args, device):
    rows = []
    for seq_len in args.crf_seq_lens:
        emissions, tags, mask = crf_batch(args.crf_batch_size, seq_len, args.num_tags, device)
        crfs = dict(zip(("ours", "torchcrf"), crf_pair(args.num_tags, device)))
        with torch.no_grad():
            same_paths = crfs["ours"].decode(emissions, mask) == crfs["torchcrf"].decode(emissions, mask)
        if not same_paths:  # float32 near-ties can be broken differently; not worth stopping the benchmark
            print(f"warning: Viterbi paths of the two CRFs differ at T={seq_len}")

        def train_step(crf):
            emissions.grad = None
            (-crf(emissions, tags, mask, reduction="mean")).backward()

        def decode(crf):
            with torch.no_grad():
                crf.decode(emissions, mask)  # lists of tags, as both return

        for task, function in (("llh forward+backward", train_step), ("viterbi decode", decode)):
            calls = {name: (lambda crf=crf: function(crf)) for name, crf in crfs.items()}
            times = median_ms(calls, device, args.repeats, args.warmup)
            rows.append({"task": task, "batch": args.crf_batch_size, "seq_len": seq_len, "num_tags": args.num_tags,
                         "ours_ms": times["ours"], "torchcrf_ms": times["torchcrf"],
                         "speedup": times["torchcrf"] / times["ours"], "same_paths": same_paths})
    return rows


def print_crf(rows):
    print(f"{'CRF task':<22} {'B':>3} {'T':>4} {'K':>3} {'ours ms':>9} {'torchcrf ms':>12} {'speedup':>8}")
    for row in rows:
        print(f"{row['task']:<22} {row['batch']:>3} {row['seq_len']:>4} {row['num_tags']:>3} {row['ours_ms']:>9.2f} "
              f"{row['torchcrf_ms']:>12.2f} {row['speedup']:>7.2f}x")


# ----- 2./3. whole models -----


class TorchcrfForModel(torchcrf.CRF):
    """pytorch-crf behind the model's ``self.crf(logits, labels, mask=labels != -100, reduction=...)`` call.

    pytorch-crf needs the first position visible and no holes, so the [CLS] column is dropped; this is exact for
    the benchmark's labels, which are -100 at [CLS], [SEP] and padding only (training only, no ``viterbi_tags``).
    """

    def forward(self, emissions, tags, mask=None, reduction="mean"):
        emissions = emissions.float()  # pytorch-crf does not upcast bf16 emissions itself
        return super().forward(emissions[:, 1:], tags[:, 1:].clamp(min=0), mask[:, 1:], reduction=reduction)


def bert_config_kwargs(args):
    if args.tiny:
        kwargs = BertConfig(**TINY_BERT).to_dict()
    elif args.bert_config:
        kwargs = BertConfig.from_json_file(args.bert_config).to_dict()
    else:
        kwargs = BertConfig().to_dict()
    for key in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "id2label", "label2id"):
        kwargs.pop(key, None)
    return kwargs


def build_model(kind, args, device):
    base = dict(bert_config_kwargs(args), num_labels=args.num_tags)
    if kind == "softmax":
        model = BertForTokenClassification(BertConfig(**base, attn_implementation="sdpa"))
    else:
        config = BertBiLstmCrfConfig(**base, use_lstm=kind != "bert_crf", lstm_hidden_size=args.lstm_hidden_size,
                                     cls_token_id=CLS, sep_token_id=SEP, attn_implementation="sdpa")
        model = BertBiLstmCrfForTokenClassification(config)
        if kind == "bert_bilstm_crf_torchcrf":
            reference = TorchcrfForModel(args.num_tags, batch_first=True)
            reference.load_state_dict(model.crf.state_dict())
            model.crf = reference
    return model.to(device)


def model_batch(args, vocab_size, device):
    """Full windows: [CLS] random characters [SEP], labels -100 on [CLS] and [SEP] (as the dataset builder)."""
    shape = (args.batch_size, args.seq_len)
    input_ids = torch.randint(max(SEP + 1, vocab_size // 10), vocab_size, shape, device=device)
    input_ids[:, 0], input_ids[:, -1] = CLS, SEP
    labels = torch.randint(args.num_tags, shape, device=device)
    labels[:, 0] = labels[:, -1] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


MODEL_KINDS = ("softmax", "bert_crf", "bert_bilstm_crf", "bert_bilstm_crf_torchcrf")


def bench_models(args, device):
    """All models live side by side and take turns in every repetition (a busy CPU slows them alike)."""
    vocab_size = bert_config_kwargs(args)["vocab_size"]
    batch = model_batch(args, vocab_size, device)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    models, optimizers = {}, {}
    for kind in MODEL_KINDS:
        torch.manual_seed(args.seed)
        models[kind] = build_model(kind, args, device).train()
        optimizers[kind] = torch.optim.AdamW(models[kind].parameters(), lr=1e-5)
    train_steps = {kind: functools.partial(train_step, models[kind], optimizers[kind], batch, device)
                   for kind in MODEL_KINDS}
    train_ms = median_ms(train_steps, device, args.repeats, args.warmup)
    for model in models.values():
        model.eval()
    predictions = {kind: functools.partial(predict, models[kind], inputs, kind, device)
                   for kind in MODEL_KINDS if kind != "bert_bilstm_crf_torchcrf"}  # no viterbi_tags in pytorch-crf
    infer_ms = median_ms(predictions, device, args.repeats, args.warmup)

    tokens = args.batch_size * args.seq_len
    rows = []
    for kind in MODEL_KINDS:
        row = {"model": kind, "train_ms": train_ms[kind], "train_tokens_per_s": tokens / train_ms[kind] * 1000,
               "train_ratio_to_softmax": train_ms[kind] / train_ms["softmax"]}
        if kind in infer_ms:
            row.update(infer_ms=infer_ms[kind], infer_tokens_per_s=tokens / infer_ms[kind] * 1000,
                       infer_ratio_to_softmax=infer_ms[kind] / infer_ms["softmax"])
        if device.type == "cuda":
            models[kind].train()
            row["train_peak_gib"] = peak_memory_gib(train_steps[kind], [models[kind], optimizers[kind]], device)
            models[kind].eval()
            if kind in predictions:
                row["infer_peak_gib"] = peak_memory_gib(predictions[kind], [models[kind]], device)
        rows.append(row)
    return rows


def train_step(model, optimizer, batch, device):
    with autocast(device):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def predict(model, inputs, kind, device):
    """Tags: argmax of the logits for softmax, ``decode`` (BERT + Viterbi) for the CRF models."""
    with autocast(device):
        if kind == "softmax":
            return model(**inputs).logits.argmax(-1)
        return model.decode(**inputs).tags


def peak_memory_gib(function, owners, device):
    """GPU memory one model would need alone: its persistent tensors (weights, AdamW state) plus the peak extra
    allocation of one ``function()`` call (activations, gradients), the other models' tensors left out."""
    persistent = 0
    for owner in owners:
        tensors = owner.parameters() if isinstance(owner, torch.nn.Module) else (
            value for state in owner.state.values() for value in state.values() if torch.is_tensor(value))
        persistent += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    function()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before + persistent) / 2**30


def print_models(rows, args, device):
    gib = device.type == "cuda"
    print(f"\nModels: batch {args.batch_size} x seq_len {args.seq_len}, {args.num_tags} labels"
          f"{', bf16 autocast' if gib else ', float32'}, SDPA attention; train = forward + backward + AdamW step")
    header = f"{'model':<25} {'train ms':>9} {'tok/s':>9} {'x softmax':>9}"
    header += f" {'peak GiB':>8}" if gib else ""
    header += f" | {'infer ms':>9} {'tok/s':>9} {'x softmax':>9}" + (f" {'peak GiB':>8}" if gib else "")
    print(header)
    for row in rows:
        line = f"{row['model']:<25} {row['train_ms']:>9.1f} {row['train_tokens_per_s']:>9.0f} " \
               f"{row['train_ratio_to_softmax']:>8.2f}x"
        line += f" {row['train_peak_gib']:>8.2f}" if gib else ""
        if "infer_ms" in row:
            line += (f" | {row['infer_ms']:>9.1f} {row['infer_tokens_per_s']:>9.0f}"
                     f" {row['infer_ratio_to_softmax']:>8.2f}x")
            line += f" {row['infer_peak_gib']:>8.2f}" if gib else ""
        else:
            line += " | (training only)"
        print(line)


# ----- main -----


def environment(args, device):
    bert = "tiny " + json.dumps(TINY_BERT) if args.tiny else (args.bert_config or "BertConfig() (BERT-base)")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "bert": bert, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    info = environment(args, device)
    print(" | ".join(f"{key}: {value}" for key, value in info.items()))
    print(f"median of {args.repeats} repeats after {args.warmup} warmup runs\n")
    results = {"environment": info, "args": vars(args)}
    if not args.skip_crf:
        results["crf"] = bench_crf(args, device)
        print_crf(results["crf"])
    if not args.skip_models:
        results["models"] = bench_models(args, device)
        print_models(results["models"], args, device)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
