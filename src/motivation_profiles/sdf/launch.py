"""Launching LoRA training in this process or under `accelerate launch`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from motivation_profiles.sdf.train import train_lora

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ launching
def launch(spec: Mapping[str, Any], num_processes: int,
           accelerate_config: str | Path | None) -> None:
    """Run ``train_lora(**spec)`` in this process, or, with ``num_processes`` > 1, under
    ``accelerate launch`` with one process per GPU (``accelerate_config``: the FSDP settings).
    ``spec`` holds JSON-able values only."""
    if num_processes <= 1:
        train_lora(**spec)
        return
    if accelerate_config is None:
        raise ValueError("training on more than one GPU needs sdf.training.accelerate_config")
    fd, spec_path = tempfile.mkstemp(prefix="train_lora.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(spec), fh)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(accelerate_config), "--num_processes", str(num_processes), "-m",
               "motivation_profiles.sdf.launch", spec_path]
        log.info("launching: %s", " ".join(cmd))
        # the package may be imported from this checkout rather than installed
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        subprocess.run(cmd, check=True, env=env)
    finally:
        os.unlink(spec_path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m motivation_profiles.sdf.launch SPEC.json``: train_lora(**SPEC)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m motivation_profiles.sdf.launch SPEC.json")
    # under accelerate launch only rank 0 reports progress; the others warn and fail loudly
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_lora(**json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    # `python -m` runs this file as __main__; call the package module's main instead, so the
    # logger is named motivation_profiles.sdf.launch and there is one set of classes.
    from motivation_profiles.sdf.launch import main as _main

    _main()
