"""Benchmark: steered vs. unsteered generation, and ours vs. the steering-vectors library.

The same batch of chat requests goes through ``HFBackend.generate`` on the embedded model
(SmolLM2-135M-Instruct) three ways, interleaved over ``--repeats``:

- ``unsteered``: no hooks;
- ``ours``: ``HFBackend(steering=...)``, this project's hooks adding alpha * v at ``--layers``;
- ``library``: no steering in the backend, the same vectors applied by ``steering-vectors``
  (``SteeringVector.apply``, decoder-block outputs, all positions), the bench-only dependency
  in ``requirements/bench.txt``.

Every request generates exactly ``--max-new-tokens`` tokens (end-of-turn is disabled), so the
three variants do the same work and throughput is tokens / median seconds. Each timed run gets a
fresh backend (its prompt-prefix KV cache is computed inside the timed region, steered where the
variant steers). Validity: ``ours`` and ``library`` must produce identical greedy text (they add
the same tensor to the same place), and both must differ from ``unsteered`` (else alpha is too
small to show the hooks run); otherwise exit 2.

Printed ratios (targets from issue 5): throughput(ours) / throughput(unsteered) >= 0.97, and
time(library) / time(ours) >= 1.0 (ours costs no more than the library).

    .venv/bin/python bench/steering_throughput.py              # ~3 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import _embedded
import numpy as np
import torch

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.models.hooks import Steering

log = logging.getLogger("bench.steering_throughput")

TARGET_STEERED = 0.97
TARGET_LIBRARY = 1.0
TOPICS = ["bread", "tides", "a bicycle", "chess openings", "tomato plants", "volcanoes",
          "paper kites", "sourdough", "rainbows", "compost", "knots", "lighthouses"]


class BenchSetupError(RuntimeError):
    pass


class FixedLength(HFBackend):
    """Never stops early: every row generates ``max_new_tokens`` (equal work per variant)."""

    @property
    def eos_ids(self) -> set[int]:
        return {int(self.tokenizer.vocab_size) + 1000}  # an id no step can produce


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=8, help="requests per run (one batch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--layers", type=int, nargs="+", default=[10, 20],
                    help="decoder layers to steer (default: 2 of SmolLM2's 30)")
    ap.add_argument("--alpha", type=float, default=8.0, help="multiplier of the unit vectors")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--strict", action="store_true", help="exit 1 below a target")
    return ap.parse_args(argv)


def requests(n: int) -> list[ChatRequest]:
    return [ChatRequest(f"q{i}", ({"role": "system", "content": "You are a concise, friendly "
                                   "assistant. Answer in plain prose."},
                                  {"role": "user",
                                   "content": f"Tell me three facts about {TOPICS[i % 12]}."}),
                        seed=i) for i in range(n)]


def library_vector(steering: Steering):
    from steering_vectors import SteeringVector

    return SteeringVector({layer: torch.as_tensor(v) for layer, v in steering.vectors.items()},
                          layer_type="decoder_block")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "motivation_profiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except BenchSetupError as exc:
        print(f"steering_throughput: setup error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    try:
        import steering_vectors  # noqa: F401
    except ImportError as exc:
        raise BenchSetupError("the steering-vectors library is not installed; `make bench` "
                              "installs requirements/bench.txt") from exc
    model, tok, mdir = _embedded.load(args.model_dir)
    d = model.config.hidden_size
    rng = np.random.default_rng(0)
    vecs = {}
    for layer in args.layers:
        v = rng.standard_normal(d)
        vecs[layer] = (v / np.linalg.norm(v)).astype(np.float32)
    steering = Steering(vecs, args.alpha)
    lib = library_vector(Steering(vecs, 1.0))
    reqs = requests(args.requests)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens)

    def backend(steered: bool) -> HFBackend:
        return FixedLength(model=model, tokenizer=tok, batch_size=args.batch_size,
                           show_progress=False, steering=steering if steered else None)

    def variant(name: str):
        if name == "library":
            with lib.apply(model, multiplier=args.alpha):
                return backend(False).generate(reqs, params)
        return backend(name == "ours").generate(reqs, params)

    backend(False).generate(reqs[:1], SamplingParams(0.0, 1.0, 2))  # warm-up, untimed
    names = ("unsteered", "ours", "library")
    times: dict[str, list[float]] = {n: [] for n in names}
    outs = {}
    for rep in range(args.repeats):
        for name in names:
            t0 = time.perf_counter()
            res = variant(name)
            times[name].append(time.perf_counter() - t0)
            outs.setdefault(name, res)
        log.info("repeat %d/%d: %s", rep + 1, args.repeats,
                 "  ".join(f"{n} {times[n][-1]:.2f}s" for n in names))

    tokens = {n: sum(c.completion_tokens for c in outs[n]) for n in names}
    if len(set(tokens.values())) != 1 or tokens["ours"] != args.requests * args.max_new_tokens:
        raise BenchSetupError(f"variants generated different token counts {tokens}")
    text = {n: [c.text for c in outs[n]] for n in names}
    same_lib = sum(a == b for a, b in zip(text["ours"], text["library"], strict=True))
    differ = sum(a != b for a, b in zip(text["ours"], text["unsteered"], strict=True))
    med = {n: statistics.median(ts) for n, ts in times.items()}
    tput = {n: tokens[n] / med[n] for n in names}
    steered_ratio = tput["ours"] / tput["unsteered"]
    library_ratio = med["library"] / med["ours"]

    print()
    print(f"steering throughput: {_embedded.MODEL_NAME} ({mdir}), {args.requests} requests, "
          f"batch {args.batch_size}, {args.max_new_tokens} new tokens each, layers "
          f"{args.layers}, alpha {args.alpha:+g}, repeats {args.repeats}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'variant':<11}{'median s':>10}{'tokens/s':>10}  runs (s)")
    for n in names:
        print(f"{n:<11}{med[n]:>10.2f}{tput[n]:>10.1f}  "
              + " ".join(f"{t:.2f}" for t in times[n]))
    print(f"greedy texts identical ours vs library: {same_lib}/{len(reqs)}; "
          f"ours differs from unsteered: {differ}/{len(reqs)}")
    ok1, ok2 = steered_ratio >= TARGET_STEERED, library_ratio >= TARGET_LIBRARY
    print(f"throughput steered/unsteered: {steered_ratio:.3f} (target >= {TARGET_STEERED}): "
          f"{'PASS' if ok1 else 'BELOW TARGET'}")
    print(f"time library/ours: {library_ratio:.3f} (target >= {TARGET_LIBRARY}): "
          f"{'PASS' if ok2 else 'BELOW TARGET'}")
    print(f"RESULT steering_throughput ratio={steered_ratio:.3f} target={TARGET_STEERED} "
          f"library_over_ours={library_ratio:.3f} library_target={TARGET_LIBRARY}")
    if same_lib != len(reqs):
        print("steering_throughput: ours and the library disagree; they should add the same "
              "tensor at the same place", file=sys.stderr)
        return 2
    if differ == 0:
        print("steering_throughput: steering changed no output; raise --alpha", file=sys.stderr)
        return 2
    return 1 if args.strict and not (ok1 and ok2) else 0


if __name__ == "__main__":
    sys.exit(main())
