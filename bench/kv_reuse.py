"""Benchmark: forced-choice AF rollouts with per-row KV reuse vs the shared prefix alone.

Runs the embedded demo's rollout protocol (the compact system prompt, ``forced_choice``, two
turns, a prefilled scratchpad, the tag scored after the last turn) through ``run_rollouts`` on
the embedded model twice per repeat, alternating: ``HFBackend`` as configured (each row's
prompt and generated tokens kept, so its next turn and its tag scoring compute only new
tokens; ``backends/kv_reuse.py``) and with ``kv_reuse_bytes=0`` (the baseline: only the
system prompt shared by a call's rows is reused, each turn and the tag scoring prefill the
row's whole transcript again). Prints the ratio baseline / reuse of the median times, measured
in the same run (absolute seconds on a shared machine mean little), and checks that both
variants wrote the same transcripts and tag probabilities (to 1e-4).

    .venv/bin/python bench/kv_reuse.py            # about 2 min on 2 CPU cores

Exit status: 0 (benchmarks report, they do not gate), 1 below target with ``--strict``, 2 when
the two variants disagree.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout even without `pip install -e .`

import _embedded  # noqa: E402
import torch  # noqa: E402

from motivation_profiles.backends.base import SamplingParams  # noqa: E402
from motivation_profiles.backends.hf import HFBackend  # noqa: E402
from motivation_profiles.goals.advbench import load_goals  # noqa: E402
from motivation_profiles.rollouts.protocol import PromptSet  # noqa: E402
from motivation_profiles.rollouts.run import run_rollouts  # noqa: E402

log = logging.getLogger("bench.kv_reuse")
TARGET = 1.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--goals", type=int, default=3, help="rollouts = goals x 2 tiers")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="per turn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a demo job has 1)")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--strict", action="store_true", help="exit 1 when below the target")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "motivation_profiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    model, tok, _ = _embedded.load(args.model_dir)
    prompts = PromptSet.from_config({
        "system": str(ROOT / "resources/prompts/helpful_only_compact.txt"),
        "user_template": str(ROOT / "resources/prompts/user_turn.txt"),
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>"})
    goals = load_goals(ROOT / "resources/goals/embedded_goals.csv", sha256=None,
                       n=args.goals, seed=0)
    params = SamplingParams(1.0, 1.0, args.max_new_tokens, stop=("</OUTPUT>",))
    variants = {"reuse": None, "baseline": 0}
    times: dict[str, list[float]] = {v: [] for v in variants}
    frames, stats = {}, {}
    for rep in range(args.repeats):
        for name, budget in variants.items():
            kw = {} if budget is None else {"kv_reuse_bytes": budget}
            backend = HFBackend(model=model, tokenizer=tok, batch_size=24,
                                show_progress=False, **kw)
            t0 = time.perf_counter()
            frames[name] = run_rollouts(
                backend, prompts, goals, seeds=[0], params=params, max_turns=2,
                meta={"model": "bench"}, prefill="<SCRATCHPAD_REASONING>",
                output_mode="forced_choice", output_tokens=0, batch_tiers=True)
            times[name].append(time.perf_counter() - t0)
            stats[name] = dict(backend.kv_stats)
            log.info("repeat %d %-8s %6.1f s  prompt tokens %s", rep + 1, name,
                     times[name][-1], stats[name])
    a, b = frames["reuse"], frames["baseline"]
    same = a["transcript"].to_list() == b["transcript"].to_list()
    diff = max(abs(x - y) for x, y in zip(a["p_accept"], b["p_accept"], strict=True))
    med = {v: statistics.median(t) for v, t in times.items()}
    ratio = med["baseline"] / med["reuse"]
    print(f"\nkv reuse benchmark: {len(a)} forced-choice rollouts x 2 turns, "
          f"{args.max_new_tokens} tokens a turn, torch threads {torch.get_num_threads()}")
    for name in variants:
        print(f"{name:<9} median {med[name]:6.1f} s  runs "
              f"{' '.join(f'{t:.1f}' for t in times[name])}  prompt tokens "
              f"computed {stats[name]['computed']}, reused {stats[name]['reused']}")
    print(f"transcripts identical: {same}; max |p_accept difference| {diff:.1e}")
    print(f"speedup baseline/reuse: {ratio:.2f}x (target >= {TARGET})")
    print(f"RESULT kv_reuse speedup={ratio:.2f} target={TARGET}")
    if not same or diff > 1e-4:
        print("kv_reuse: the variants disagree beyond floating-point effects", file=sys.stderr)
        return 2
    return 1 if args.strict and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
