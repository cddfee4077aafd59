"""Job steps and a picklable stand-in for Snakemake's script object, for test_warm.py (the
warm-start child imports this module by name)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeJob:
    rule: str
    out: str
    threads: int = 1
    log: list[str] = field(default_factory=list)
    wildcards: dict[str, str] = field(default_factory=dict)


def report(job: FakeJob) -> None:
    """Writes what the job's process looks like from inside."""
    import torch

    Path(job.out).write_text("\n".join([
        f"pid={os.getpid()}", f"cwd={os.getcwd()}", f"flag={os.environ.get('WARM_TEST_FLAG')}",
        f"threads={torch.get_num_threads()}", f"preloaded={'transformers' in sys.modules}"]))
    print("stdout of the job")
    print("stderr of the job", file=sys.stderr)


def fail(job: FakeJob) -> None:
    raise RuntimeError("this job fails")


def sleep(job: FakeJob) -> None:
    Path(job.out).write_text(str(os.getpid()))
    time.sleep(600)
