"""What every benchmark records about its run: the machine, the load, the command line."""
from __future__ import annotations

import os
import platform
import subprocess
import sys


def machine() -> str:
    """``x86_64, 2 cores, torch 2.13.0+cpu, 2 threads``."""
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def uptime() -> str:
    """The ``uptime`` line (time, load averages)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def command(script: str, argv: list[str] | None) -> str:
    """The command that ran ``benchmarks/script`` with ``argv`` (default: this process's arguments)."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
