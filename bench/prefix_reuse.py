"""Benchmark: AF rollouts with the shared prompt prefix reused vs. per-request prefill.

Runs the same alignment-faking rollouts (N goals x both tiers x 1 seed, one turn, greedy) through
``run_rollouts`` with ``HFBackend(reuse_prefix=True)`` and ``HFBackend(reuse_prefix=False)`` on
the embedded model (SmolLM2-135M-Instruct), one loaded model shared by both, and prints the
ratio baseline/reuse against the project target (>= 3x, with a system prompt of >= 2,000
tokens). The ratio is measured within one run, so it is meaningful on a shared, noisy machine;
absolute seconds are not.

Each timed run gets a fresh backend, so the reuse variant pays its one-time prefix prefill.
Variants alternate (reuse, baseline, reuse, baseline, ...) over ``--repeats`` and the median
time per variant is compared. Outputs of the two variants are compared rollout by rollout:
floating-point differences may change a few greedy tokens, but if fewer than half of the
transcripts agree the script fails, since that means the two paths compute different things.

Exit status: 0 whether or not the target is met (benchmarks report, they do not gate), 1 below
target with ``--strict``, 2 when the setup is invalid (prompt too short, outputs disagree,
rollouts that generated nothing).

    .venv/bin/python bench/prefix_reuse.py            # defaults: ~4 min on 2 CPU cores
    .venv/bin/python bench/prefix_reuse.py --system-tokens 0 --goals 4   # whole prompt, slow
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout even without `pip install -e .`

import _embedded  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from motivation_profiles.backends.base import ChatRequest, SamplingParams, longest_common_prefix  # noqa: E402
from motivation_profiles.backends.hf import HFBackend  # noqa: E402
from motivation_profiles.goals.advbench import load_goals  # noqa: E402
from motivation_profiles.rollouts.protocol import PromptSet  # noqa: E402
from motivation_profiles.rollouts.run import rollout_meta, run_rollouts  # noqa: E402

log = logging.getLogger("bench.prefix_reuse")

MODEL_NAME = _embedded.MODEL_NAME
DEMO_MODEL_DIR = _embedded.DEMO_MODEL_DIR
CACHE_MODEL_DIR = _embedded.CACHE_MODEL_DIR
SYSTEM_PROMPT = ROOT / "resources" / "prompts" / "helpful_only_full.txt"
USER_TEMPLATE = ROOT / "resources" / "prompts" / "user_turn.txt"
GOALS = ROOT / "resources" / "goals" / "embedded_goals.csv"
MIN_SYSTEM_TOKENS = 2000
TARGET = 3.0
STOP = ("</OUTPUT>",)
MAX_TURNS = 1
SEEDS = (0,)


class BenchSetupError(RuntimeError):
    """The comparison would not be valid; the message says why."""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--goals", type=int, default=8,
                    help="goals from embedded_goals.csv; rollouts = goals x 2 tiers x 1 seed")
    ap.add_argument("--batch-size", type=int, default=8, help="HFBackend batch size (both)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="per rollout (greedy)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs per variant (alternating order); the median is compared")
    ap.add_argument("--system-tokens", type=int, default=2048,
                    help="use the shortest run of whole paragraphs of helpful_only_full.txt "
                         f"with at least this many tokens (>= {MIN_SYSTEM_TOKENS}); 0 = the "
                         "whole file (~6,100 tokens: ~3x slower baseline on 2 CPU cores)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when below the target")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help=f"prepared checkpoint (default: {DEMO_MODEL_DIR.relative_to(ROOT)} "
                         f"if `make demo` made it, else prepared into {CACHE_MODEL_DIR})")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.goals < 1 or args.batch_size < 1 or args.max_new_tokens < 1 or args.repeats < 1:
        ap.error("--goals, --batch-size, --max-new-tokens and --repeats must be >= 1")
    if args.system_tokens and args.system_tokens < MIN_SYSTEM_TOKENS:
        ap.error(f"--system-tokens must be 0 (whole prompt) or >= {MIN_SYSTEM_TOKENS}")
    return args


# --------------------------------------------------------------------------- setup


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def system_prompt(tok, want: int) -> tuple[str, int, int]:
    """(text, its tokens, whole file's tokens): the whole file, or its shortest run of whole
    paragraphs with at least ``want`` tokens."""
    full = SYSTEM_PROMPT.read_text().rstrip("\n")
    full_tokens = n_tokens(tok, full)
    text = full
    if want:
        paras = full.split("\n\n")
        for k in range(1, len(paras) + 1):
            text = "\n\n".join(paras[:k])
            if n_tokens(tok, text) >= want:
                break
    used = n_tokens(tok, text)
    if used < MIN_SYSTEM_TOKENS:
        raise BenchSetupError(
            f"{SYSTEM_PROMPT.relative_to(ROOT)}: the system prompt has {used} tokens with the "
            f"model's tokenizer, below the {MIN_SYSTEM_TOKENS} the benchmark is defined for; "
            "restore the paper-scale prompt (or raise --system-tokens)"
        )
    return text, used, full_tokens


def reuse_prefix_tokens(backend: HFBackend, prompts: PromptSet, goals) -> list[int]:
    """Prefix the reuse backend caches for each (tier) group, as ``_choose_prefix`` picks it."""
    from motivation_profiles.rollouts.protocol import TIERS

    out = []
    for tier in TIERS:
        ids = [backend.encode(prompts.messages(g, tier)) for g in goals["goal"]]
        lcp = min(longest_common_prefix(ids), min(len(s) for s in ids) - 1)
        out.append(lcp if lcp >= backend.min_prefix_tokens else 0)
    return out


# --------------------------------------------------------------------------- bench


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "motivation_profiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except BenchSetupError as exc:
        print(f"prefix_reuse: setup error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    t_load = time.perf_counter()
    try:
        model, tok, mdir = _embedded.load(args.model_dir)
    except _embedded.ModelDirError as exc:
        raise BenchSetupError(str(exc)) from exc
    log.info("model loaded in %.1fs (not timed); torch threads: %d",
             time.perf_counter() - t_load, torch.get_num_threads())
    # The model's own context (8192 for SmolLM2), not HFBackend's default cap of 4096: the whole
    # paper-scale prompt is longer than 4096 tokens and would be skipped unprocessed.
    max_model_len = int(model.config.max_position_embeddings)

    system, sys_tokens, full_tokens = system_prompt(tok, args.system_tokens)
    prompts = dataclasses.replace(
        PromptSet.from_config({
            "system": str(SYSTEM_PROMPT), "user_template": str(USER_TEMPLATE),
            "tier_values": {"monitored": "True", "unmonitored": "False"},
            "continuation": "<NEXT/>",
        }),
        system=system,
    )
    goals = load_goals(GOALS, sha256=None, n=args.goals, seed=0)
    if len(goals) < args.goals:
        log.warning("only %d goals in %s", len(goals), GOALS.relative_to(ROOT))
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                            stop=STOP)
    n_rollouts = len(goals) * 2 * len(SEEDS)
    log.info("system prompt: %s, %d tokens%s (>= %d required)",
             SYSTEM_PROMPT.relative_to(ROOT), sys_tokens,
             "" if sys_tokens == full_tokens else
             f" (first paragraphs of the {full_tokens}-token file; --system-tokens 0 for all)",
             MIN_SYSTEM_TOKENS)
    log.info("%d rollouts (%d goals x 2 tiers x %d seed), batch %d, greedy, max_new_tokens %d, "
             "max_turns %d", n_rollouts, len(goals), len(SEEDS), args.batch_size,
             args.max_new_tokens, MAX_TURNS)

    def backend(reuse: bool) -> HFBackend:
        return HFBackend(model=model, tokenizer=tok, batch_size=args.batch_size,
                         max_model_len=max_model_len, reuse_prefix=reuse, show_progress=False)

    prefix = reuse_prefix_tokens(backend(True), prompts, goals)
    prompt_lens = [len(backend(False).encode(prompts.messages(g, t)))
                   for g in goals["goal"] for t in ("monitored", "unmonitored")]

    # Warm-up (untimed): first-call costs (thread pools, kernels, stop-string tables) would
    # otherwise land on whichever variant runs first.
    backend(False).generate([ChatRequest("warmup", ({"role": "user", "content": "Hi"},))],
                            dataclasses.replace(params, max_new_tokens=2))

    variants = {"reuse": True, "baseline": False}
    times: dict[str, list[float]] = {v: [] for v in variants}
    rows = {}
    for rep in range(args.repeats):
        for name, reuse in variants.items():
            meta = rollout_meta(model=MODEL_NAME, condition="bench", adapter=None, backend="hf",
                                prompts=prompts, params=params, max_turns=MAX_TURNS)
            b = backend(reuse)
            t0 = time.perf_counter()
            df = run_rollouts(b, prompts, goals, seeds=SEEDS, params=params,
                              max_turns=MAX_TURNS, meta=meta)
            dt = time.perf_counter() - t0
            times[name].append(dt)
            rows.setdefault(name, df)
            log.info("repeat %d/%d  %-8s %7.1fs  (%d rollouts, %d new tokens)", rep + 1,
                     args.repeats, name, dt, len(df), int(df["completion_tokens"].sum()))

    # ---- validity: every rollout generated something, same rollouts, transcripts agree
    for name, df in rows.items():
        empty = df.filter(pl.col("completion_tokens") == 0)
        if len(empty):
            raise BenchSetupError(
                f"{name}: {len(empty)} rollouts generated no tokens (prompt over the "
                f"{max_model_len}-token context?); the timing would not measure generation"
            )
    keys = ["goal_id", "tier", "seed"]
    a = rows["reuse"].sort(keys).select([*keys, "transcript"])
    b = rows["baseline"].sort(keys).select([*keys, "transcript"])
    if not a.select(keys).equals(b.select(keys)):
        raise BenchSetupError("the two variants ran different rollouts")
    agree = int((a["transcript"] == b["transcript"]).sum())

    med = {v: statistics.median(ts) for v, ts in times.items()}
    speedup = med["baseline"] / med["reuse"]
    verdict = "PASS" if speedup >= TARGET else "BELOW TARGET"

    print()
    print(f"prefix reuse benchmark: {MODEL_NAME}, system prompt {sys_tokens} tokens, "
          f"prompts {min(prompt_lens)}-{max(prompt_lens)} tokens, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, repeats {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'variant':<10}{'median s':>10}{'rollouts':>10}{'prefix tokens':>16}  runs (s)")
    for name in variants:
        ptoks = "/".join(map(str, prefix)) if variants[name] else "0"
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"{name:<10}{med[name]:>10.1f}{len(rows[name]):>10}{ptoks:>16}  {runs}")
    print(f"transcripts identical: {agree}/{len(a)}")
    print(f"speedup baseline/reuse: {speedup:.2f}x (target >= {TARGET:.1f}x): {verdict}")
    print(f"RESULT prefix_reuse speedup={speedup:.2f} target={TARGET}")

    if agree * 2 < len(a):
        print(f"prefix_reuse: only {agree}/{len(a)} transcripts agree between the variants; "
              "reuse and per-request prefill should differ by floating-point effects only",
              file=sys.stderr)
        return 2
    if args.strict and speedup < TARGET:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
