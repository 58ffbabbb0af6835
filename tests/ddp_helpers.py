"""What the two-process tests share: a free port, and a worker that sets the environment
torchrun would set and runs train.main (importable by name, as torch.multiprocessing.spawn
needs)."""

import os
import socket

import torch

import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, ports: list[int], runs: list[list[str]]) -> None:
    """One of two processes: the environment torchrun would set, then train.main per run
    (each run on a fresh port: the previous run's process group closed its store)."""
    torch.set_num_threads(1)
    for port, argv in zip(ports, runs):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE="2")
        if train.main(argv) != 0:
            raise RuntimeError(f"rank {rank}: train.main failed")
