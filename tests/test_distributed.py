"""brat_ner/distributed.py: train.py under torchrun and accelerate launch with two CPU processes trains two
processes together (gloo), each on its share of the batches, and says so; a launch that would train one process
where several were asked for is refused in one line."""

import json
import math
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, SCRIPT_ENVIRONMENT, small_training

PROCESSES = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launchers() -> dict[str, list[str]]:
    """The two ways to start PROCESSES processes of train.py, each on a port of its own (other tests may run)."""
    return {
        "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES),
                     "--master_port", str(free_port())],
        "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(PROCESSES),
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", str(free_port())],
    }


def training(output_dir) -> list[str]:
    """One epoch of small batches, so that a share of the batches differs from all of them; no --use_cpu: the
    launch finds that the machine has no GPU."""
    arguments = small_training(output_dir, "--num_train_epochs", "1", "--per_device_train_batch_size", "2")
    at = arguments.index("--use_cpu")
    return arguments[:at] + arguments[at + 2:]


def run(arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=REPO, env=SCRIPT_ENVIRONMENT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one process" or a launcher's name: (its output folder, the completed command)}."""
    folder = tmp_path_factory.mktemp("distributed")
    completed = {"one process": (folder / "single", run(training(folder / "single")))}
    for name, launcher in launchers().items():
        completed[name] = (folder / name, run([*launcher, *training(folder / name)]))
    return completed


def global_step(output_dir) -> int:
    return json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_both_launchers_train_two_cpu_processes_each_on_its_share_of_the_batches(runs, launcher):
    single_dir, single = runs["one process"]
    output_dir, completed = runs[launcher]
    assert single.returncode == 0, single.stderr[-3000:]
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "train.py: 1 process, on cpu (no distributed training)" in single.stdout
    assert (f"train.py: {PROCESSES} processes (MULTI_CPU, torch.distributed backend gloo), on cpu:0, cpu:0; each "
            "trains on its share of every batch") in completed.stdout
    # One epoch: one step per batch. Together the processes take each batch once, so each takes half of them.
    batches = global_step(single_dir)
    share = math.ceil(batches / PROCESSES)
    assert batches > PROCESSES and global_step(output_dir) == share
    for process in range(1, PROCESSES + 1):
        assert f"train.py: process {process} of {PROCESSES} (cpu:0) trains on {share} batches per epoch" \
            in completed.stdout
    # Trained together: not the one-process run's weights (as when one of them trained alone).
    single_weights, weights = load_file(single_dir / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert single_weights.keys() == weights.keys()
    assert any(not torch.equal(single_weights[name], weights[name]) for name in weights)
    assert (output_dir / "test_report.json").is_file() and not (output_dir / "run.lock").exists()


def test_accelerate_launch_on_cpus_that_would_start_one_process_is_refused(tmp_path):
    output_dir = tmp_path / "model"
    completed = run(["-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(PROCESSES),
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     *training(output_dir)])
    assert completed.returncode != 0
    assert ("train.py: accelerate launch started one process, not the several that --num_processes asked for"
            in completed.stderr), completed.stderr[-3000:]
    assert "torchrun --nproc_per_node N train.py" in completed.stderr
    assert not output_dir.exists()
