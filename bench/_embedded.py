"""The embedded checkpoint for the benchmarks: the demo's copy if `make demo` made it, else a
private copy prepared once under $TMPDIR (model loading is never timed)."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout even without `pip install -e .`

from motivation_profiles.models.load import load_model  # noqa: E402
from motivation_profiles.models.prepare import prepare_model  # noqa: E402

MODEL_NAME = "smollm2-135m"
DEMO_MODEL_DIR = ROOT / "resources" / "models" / MODEL_NAME
CACHE_MODEL_DIR = Path(tempfile.gettempdir()) / "motivation_profiles-bench" / MODEL_NAME

log = logging.getLogger("bench")


class ModelDirError(RuntimeError):
    pass


def model_dir(explicit: Path | None = None) -> Path:
    """``explicit`` if given (it must hold a checkpoint), else the demo's copy, else the bench
    cache, prepared on first use."""
    if explicit is not None:
        if not (explicit / "config.json").is_file():
            raise ModelDirError(f"--model-dir {explicit}: no config.json there")
        log.info("model: %s (--model-dir)", explicit)
        return explicit
    for d in (DEMO_MODEL_DIR, CACHE_MODEL_DIR):
        if (d / "config.json").is_file():
            log.info("model: reusing %s", d)
            return d
    log.info("model: preparing the embedded checkpoint into %s", CACHE_MODEL_DIR)
    return prepare_model(MODEL_NAME, {"source": "embedded"}, CACHE_MODEL_DIR)


def load(explicit: Path | None = None):
    """(model, tokenizer, directory) of the embedded model, float32 on the CPU."""
    d = model_dir(explicit)
    try:
        model, tok = load_model(d, dtype="float32", device="cpu")
    except OSError as exc:
        if d != DEMO_MODEL_DIR:
            raise
        # `make demo` may be re-preparing that directory right now (it is replaced atomically).
        log.warning("could not load %s (%s); preparing a private copy", d, exc)
        d = prepare_model(MODEL_NAME, {"source": "embedded"}, CACHE_MODEL_DIR)
        model, tok = load_model(d, dtype="float32", device="cpu")
    return model, tok, d
