"""The processes of a training run: a launch that would train fewer processes than it asked for is refused, CPU
processes started by a launcher train together (``gloo``), and the run says what it is: one line at the start
naming the processes, the backend and the devices, and a line per process with its share of the batches.

``torchrun --nproc_per_node N`` and ``accelerate launch --multi_gpu --num_processes N`` start N processes and
give each ``LOCAL_RANK`` and ``WORLD_SIZE``. On GPUs accelerate then joins them with NCCL; without an accelerator
it joins them only when told the run is on CPUs (``ACCELERATE_USE_CPU``), and otherwise leaves N processes that
each train alone, all believing they are the main one. ``accelerate launch --cpu --num_processes N`` (or
``--num_processes N`` without a second GPU) starts one process: accelerate runs several CPU processes only
through mpirun.
"""

from __future__ import annotations

import os

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from brat_ner.cli import UsageError

SEVERAL_PROCESSES = ("accelerate launch --multi_gpu --num_processes N {script} ... or torchrun --nproc_per_node N "
                     "{script} ...")


def check_launch(script: str) -> None:
    """Before the training arguments set up the devices: refuse (``UsageError``) a launch by ``accelerate launch``
    that asked for several processes and started one, and make the processes of a launch on a machine without
    an accelerator train together on CPUs (``gloo``) rather than each alone."""
    launched_alone = "WORLD_SIZE" not in os.environ and "LOCAL_RANK" not in os.environ
    # accelerate's simple launcher (one process) sets ACCELERATE_USE_CPU, and MASTER_ADDR only when several
    # processes or machines were asked for.
    if launched_alone and "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ:
        raise UsageError("accelerate launch started one process, not the several that --num_processes asked for (it "
                         "starts several CPU processes only through mpirun, and several GPU processes only with "
                         "--multi_gpu); for N processes run " + SEVERAL_PROCESSES.format(script=script))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.accelerator.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"  # read by TrainingArguments when it sets up the devices


def describe_processes(training_args) -> str:
    """One line: how many processes train, joined by which backend, on which devices (all processes call it:
    the devices are gathered from each)."""
    if training_args.world_size == 1:
        return f"1 process, on {training_args.device} (no distributed training)"
    devices = gather_object([str(training_args.device)])
    state = training_args.distributed_state
    return (f"{training_args.world_size} processes ({state.distributed_type.value}, torch.distributed backend "
            f"{state.backend}), on {', '.join(devices)}; each trains on its share of every batch")


class ProcessShareCallback(TrainerCallback):
    """Each process of a distributed run says how many batches of its share it trains on per epoch: the proof
    that the processes divide the data rather than each training on all of it."""

    def __init__(self, script: str):
        self.script = script

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if args.world_size > 1 and train_dataloader is not None:
            print(f"{self.script}: process {args.process_index + 1} of {args.world_size} ({args.device}) trains on "
                  f"{len(train_dataloader)} batches per epoch", flush=True)
