"""Activation extraction: hook pooling vs. a bare decoder pass, and peak memory vs. length.

Two measurements on the embedded SmolLM2-135M (30 layers, d = 576), CPU, fp32:

- (a) throughput: ``extract_activations`` (all 30 layers pooled by forward hooks over the
  scratchpad and the span, then shards, index and meta written) vs. a bare decoder forward
  (``model.model(...)``, no hooks, nothing kept) over the same right-padded batches in the same
  order (``plan_batches``), on synthetic paired transcripts (default 8 pairs = 16 transcripts
  of ~400 tokens, batch 4). The two are interleaved batch by batch: inside each real
  ``extract_activations`` call, every batch's bare pass (on a hook-free copy of the decoder)
  runs just before or just after (alternating) the extraction's own forward of it, and is
  subtracted from the call's time, so whole-run load bursts on a shared machine hit both
  alike. Each of ``--repeats`` calls gives a ratio; the median is compared. Target: bare /
  extraction time >= 0.9 (extraction's throughput at least 90% of the bare pass's).
- (b) memory: one fresh subprocess per transcript length (1x, 2x, 8x of ``--mem-tokens``,
  default 256, 512, 2048), each loading the model, running a short warm-up extraction, then
  extracting ``--mem-pairs`` pairs of that length. Peak RSS is the process's high-water mark
  during the extraction: on Linux the mark is reset after the warm-up (``clear_refs``) and
  read from VmHWM, because model loading peaks higher than extraction and
  ``ru_maxrss`` cannot be reset (elsewhere ``ru_maxrss`` is used). Target: total peak RSS at 2x
  and 8x within 10% of 1x (ratio <= 1.10), with a padded-token budget per batch
  (``max_batch_tokens``, default batch size x 1.25 x the 1x length: 1x runs full batches,
  8x one transcript per batch). A second series without the budget (``batch_size`` rows of
  any length) is printed for comparison. The table also lists the memory that keeping every
  layer's hidden states ([L + 1, B, T, d] float32, what ``output_hidden_states`` holds) would
  take, which the hooks never allocate.

Exit 0 whether or not the targets are met (1 below target with ``--strict``; 2 when the setup
is invalid, e.g. the model is missing or an extraction produced non-finite values).

    .venv/bin/python bench/extraction.py [--pairs N] [--tokens T] [--batch-size B]
        [--repeats R] [--mem-tokens T] [--mem-pairs N] [--max-batch-tokens N]
        [--skip-memory] [--skip-throughput] [--no-unbudgeted] [--strict]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout even without `pip install -e .`

import _embedded  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from motivation_profiles.models.layers import decoder_and_layers  # noqa: E402
from motivation_profiles.models.load import load_model  # noqa: E402
from motivation_profiles.steering import activations  # noqa: E402
from motivation_profiles.steering.activation_cache import load_activations  # noqa: E402
from motivation_profiles.steering.activations import (  # noqa: E402
    encode_pairs,
    extract_activations,
    plan_batches,
)
from motivation_profiles.steering.pair_format import PAIR_SCHEMA  # noqa: E402

log = logging.getLogger("bench.extraction")

MODEL_NAME = _embedded.MODEL_NAME
DEMO_MODEL_DIR = _embedded.DEMO_MODEL_DIR
CACHE_MODEL_DIR = _embedded.CACHE_MODEL_DIR
TEXT = ROOT / "resources" / "prompts" / "helpful_only_full.txt"
THROUGHPUT_TARGET = 0.9
MEMORY_TARGET = 1.10
MULTIPLIERS = (1, 2, 8)
USER = "Think about the following material before answering."


class BenchSetupError(RuntimeError):
    """The comparison would not be valid; the message says why."""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8, help="pairs for (a); transcripts = 2x")
    ap.add_argument("--tokens", type=int, default=400, help="tokens per transcript in (a)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant in (a)")
    ap.add_argument("--mem-tokens", type=int, default=256, help="1x transcript length in (b)")
    ap.add_argument("--mem-pairs", type=int, default=4, help="pairs per measurement in (b)")
    ap.add_argument("--max-batch-tokens", type=int, default=None,
                    help="padded-token budget per batch in (b) (default: batch size x "
                         "1.25 x --mem-tokens, so 1x runs full batches and 8x one row each)")
    ap.add_argument("--no-unbudgeted", action="store_true",
                    help="skip (b)'s second series, batch_size rows only (no token budget)")
    ap.add_argument("--skip-memory", action="store_true", help="only measure (a)")
    ap.add_argument("--skip-throughput", action="store_true", help="only measure (b)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help=f"prepared checkpoint (default: {DEMO_MODEL_DIR.relative_to(ROOT)} "
                         f"if `make demo` made it, else prepared into {CACHE_MODEL_DIR})")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--strict", action="store_true", help="exit 1 when below a target")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.pairs, args.tokens, args.batch_size, args.repeats, args.mem_tokens,
           args.mem_pairs) < 1:
        ap.error("counts and lengths must be >= 1")
    if args.max_batch_tokens is None:
        args.max_batch_tokens = args.batch_size * args.mem_tokens * 5 // 4
    return args


# --------------------------------------------------------------------------- setup


def model_dir(explicit: Path | None) -> Path:
    try:
        return _embedded.model_dir(explicit)
    except _embedded.ModelDirError as exc:
        raise BenchSetupError(str(exc)) from exc


def _side(scratch: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": USER},
        {"role": "assistant", "content": f"<SCRATCHPAD_REASONING>{scratch}"
                                         "</SCRATCHPAD_REASONING>\n<OUTPUT>Done.</OUTPUT>"}]


def make_pairs(tok, n_pairs: int, tokens: int) -> pl.DataFrame:
    """``n_pairs`` pairs whose transcripts render to about ``tokens`` tokens each; scratchpads
    are distinct windows of the paper's system prompt; the positive side has a span (the
    scratchpad's first 80 characters)."""
    source = tok(TEXT.read_text(), add_special_tokens=False)["input_ids"]
    rendered = tok.apply_chat_template(_side("x"), tokenize=False,
                                       add_generation_prompt=False)
    overhead = len(tok(rendered, add_special_tokens=False)["input_ids"]) - 1
    want = max(tokens - overhead, 8)
    rows = []
    for i in range(n_pairs):
        sides = {}
        for j, side in enumerate(("pos", "neg")):
            start = (2 * i + j) * 211 % len(source)
            window = (source * (want // len(source) + 2))[start:start + want]
            sides[side] = tok.decode(window).replace("<", "(").replace(">", ")").strip()
        span = sides["pos"][:80]
        rows.append({"pair_id": f"bench{i}", "concept": "expectations", "source": "ooc",
                     "split": "train", "pos_messages": _side(sides["pos"]),
                     "neg_messages": _side(sides["neg"]), "pos_loci": [sides["pos"]],
                     "neg_loci": [sides["neg"]], "pos_span": span, "neg_span": None})
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def load(args: argparse.Namespace):
    torch.set_num_threads(args.threads)
    mdir = model_dir(args.model_dir)
    return load_model(mdir, dtype="float32", device="cpu")


# --------------------------------------------------------------------------- (a) throughput


def throughput(args: argparse.Namespace) -> dict:
    """Each batch's bare pass runs right before (even batches) or after (odd) the extraction's
    own forward of that batch, inside a real ``extract_activations`` call: the two are timed
    seconds apart, so a shared machine's load bursts hit both alike. The bare pass runs on a
    hook-free copy of the decoder (same weights). Extraction time = the call's wall time minus
    the bare passes inserted into it; it keeps everything else the call does (encoding,
    masks, hooks, pooling, shard/index/meta writes)."""
    model, tok = load(args)
    decoder, layers = decoder_and_layers(model)
    bare_decoder = copy.deepcopy(decoder)   # no hooks are ever registered on this copy
    pairs = make_pairs(tok, args.pairs, args.tokens)
    max_length = 4 * args.tokens + 256
    rows = encode_pairs(tok, pairs, max_length=max_length)
    lengths = [len(r.input_ids) for r in rows]
    shard_size = len(rows)
    (plan,) = plan_batches(lengths, batch_size=args.batch_size, shard_size=shard_size)
    expected = [(len(b), max(lengths[i] for i in b)) for b in plan]
    real_forward = activations._forward
    state: dict = {}

    def bare_pass(ids, attn) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            bare_decoder(input_ids=ids, attention_mask=attn, use_cache=False)
        state["bare"] += time.perf_counter() - t0
        state["bare_cpu"] += time.process_time() - c0

    def interleaved(dec, ids, attn) -> None:
        k = len(state["shapes"])
        state["shapes"].append(tuple(ids.shape))
        if k % 2 == 0:
            bare_pass(ids, attn)
        real_forward(dec, ids, attn)
        if k % 2 == 1:
            bare_pass(ids, attn)

    work = Path(tempfile.mkdtemp(prefix="bench-extraction-"))

    def run_once() -> dict:
        state.update(bare=0.0, bare_cpu=0.0, shapes=[])
        activations._forward = interleaved
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            extract_activations(model, tok, pairs, work / "acts", batch_size=args.batch_size,
                                shard_size=shard_size, max_length=max_length,
                                show_progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            activations._forward = real_forward
        if state["shapes"] != expected:
            raise BenchSetupError(f"extraction ran batches {state['shapes']}, the bare pass "
                                  f"was planned for {expected}")
        return {"extraction": wall - state["bare"], "bare": state["bare"],
                "extraction_cpu": cpu - state["bare_cpu"], "bare_cpu": state["bare_cpu"]}

    run_once()  # warm-up (untimed): thread pools, allocator growth
    _, acts = load_activations(work / "acts")
    if not np.isfinite(acts).all():
        raise BenchSetupError("extraction produced non-finite activations")
    runs = []
    for rep in range(args.repeats):
        r = run_once()
        runs.append(r)
        log.info("repeat %d/%d  extraction %6.2fs  bare %6.2fs  ratio %.3f", rep + 1,
                 args.repeats, r["extraction"], r["bare"], r["bare"] / r["extraction"])
    paired = [r["bare"] / r["extraction"] for r in runs]
    med = {k: statistics.median(r[k] for r in runs) for k in ("extraction", "bare")}
    return {"times": {k: [r[k] for r in runs] for k in ("extraction", "bare")},
            "median": med, "paired": paired, "ratio": statistics.median(paired),
            "ratio_cpu": statistics.median(r["bare_cpu"] / r["extraction_cpu"] for r in runs),
            "tokens": sum(lengths), "transcripts": len(rows), "min_len": min(lengths),
            "max_len": max(lengths), "layers": len(layers),
            "padded": sum(n * t for n, t in expected), "batches": len(plan)}


# --------------------------------------------------------------------------- (b) memory


def _status_mb(key: str) -> float | None:
    """VmHWM / VmRSS of this process from /proc (Linux), in MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: ``5 > /proc/self/clear_refs``) so the peak of
    model loading does not mask the extraction's. ``ru_maxrss`` cannot be reset reliably: the
    kernel folds the peak into it whenever a thread exits (the loader's threads have), so the
    reset peak is read from VmHWM."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _peak_mb(reset: bool) -> float:
    if reset:
        return float(_status_mb("VmHWM"))
    # ru_maxrss is KiB on Linux (bytes on macOS)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(args: argparse.Namespace) -> int:
    """One measurement in a fresh process; prints one JSON line."""
    tokens = args.memory_child
    model, tok = load(args)
    with tempfile.TemporaryDirectory(prefix="bench-extraction-mem-") as work:
        warm = make_pairs(tok, 1, 64)
        extract_activations(model, tok, warm, Path(work) / "warm", batch_size=args.batch_size,
                            shard_size=512, max_length=4096, show_progress=False)
        gc.collect()
        reset = _reset_peak()
        baseline = _peak_mb(reset)
        pairs = make_pairs(tok, args.mem_pairs, tokens)
        budget = args.max_batch_tokens or None
        index = extract_activations(model, tok, pairs, Path(work) / "acts",
                                    batch_size=args.batch_size, shard_size=512,
                                    max_length=tokens + 256, max_batch_tokens=budget,
                                    show_progress=False)
        rows = int(index["n_tokens"].max())
        (plan,) = plan_batches(index["n_tokens"].to_list(), batch_size=args.batch_size,
                               shard_size=512, max_batch_tokens=budget)
        peak = _peak_mb(reset)
        _, acts = load_activations(Path(work) / "acts")
        ok = bool(np.isfinite(acts).all())
    _, layers = decoder_and_layers(model)
    d = model.config.hidden_size
    b = max(len(batch) for batch in plan)
    hidden_mb = (len(layers) + 1) * b * rows * d * 4 / 2**20
    print(json.dumps({"tokens": tokens, "baseline_mb": baseline, "peak_mb": peak,
                      "max_len": rows, "finite": ok, "rows_per_batch": b,
                      "method": "VmHWM after reset" if reset else "ru_maxrss",
                      "hidden_states_mb": hidden_mb}))
    return 0


def memory(args: argparse.Namespace, budget: int) -> list[dict]:
    """One fresh process per length; ``budget`` 0: no token budget (batch_size rows)."""
    out = []
    for m in MULTIPLIERS:
        tokens = m * args.mem_tokens
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(tokens),
               "--mem-pairs", str(args.mem_pairs), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--max-batch-tokens", str(budget)]
        if args.model_dir is not None:
            cmd += ["--model-dir", str(args.model_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise BenchSetupError(f"memory measurement at {tokens} tokens failed:\n"
                                  f"{proc.stderr[-3000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        if not rec["finite"]:
            raise BenchSetupError(f"non-finite activations at {tokens} tokens")
        rec["multiplier"] = m
        out.append(rec)
        log.info("memory %dx (%d tokens, budget %s): peak %.0f MB, baseline %.0f MB", m,
                 tokens, budget or "none", rec["peak_mb"], rec["baseline_mb"])
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("transformers", "motivation_profiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.memory_child is not None:
            return memory_child(args)
        return run(args)
    except BenchSetupError as exc:
        print(f"extraction: setup error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    below = False
    if not args.skip_throughput:
        t = throughput(args)
        ok = t["ratio"] >= THROUGHPUT_TARGET
        below |= not ok
        print()
        print(f"(a) extraction throughput: {MODEL_NAME}, {t['layers']} layers pooled, "
              f"{t['transcripts']} transcripts of {t['min_len']}-{t['max_len']} tokens "
              f"({t['tokens']} tokens, {t['padded']} with padding), {t['batches']} batches "
              f"of {args.batch_size}, each interleaved with its bare pass, "
              f"repeats {args.repeats}, torch threads {torch.get_num_threads()}")
        print(f"{'variant':<12}{'median s':>10}{'tokens/s':>10}  runs (s)")
        for name in ("extraction", "bare"):
            med = t["median"][name]
            runs = " ".join(f"{x:.2f}" for x in t["times"][name])
            print(f"{name:<12}{med:>10.2f}{t['tokens'] / med:>10.0f}  {runs}")
        print("ratio bare/extraction per repeat: " + " ".join(f"{x:.3f}" for x in t["paired"])
              + f" (cpu-time median {t['ratio_cpu']:.3f})")
        print(f"throughput ratio extraction/bare (median over repeats): {t['ratio']:.3f} "
              f"(target >= {THROUGHPUT_TARGET}): {'PASS' if ok else 'BELOW TARGET'}")
        print(f"RESULT extraction_throughput ratio={t['ratio']:.3f} target={THROUGHPUT_TARGET}")
    if not args.skip_memory:
        series = [("token budget", args.max_batch_tokens)]
        if not args.no_unbudgeted:
            series.append(("rows only", 0))
        print()
        print(f"(b) extraction peak memory: {MODEL_NAME}, {args.mem_pairs} pairs "
              f"({2 * args.mem_pairs} transcripts) per length, batch_size {args.batch_size}, "
              "a fresh process each")
        print(f"{'batching':<22}{'length':>7}{'tokens':>8}{'rows/batch':>11}"
              f"{'peak RSS MB':>13}{'vs 1x':>7}{'baseline MB':>13}{'extra MB':>10}"
              f"{'hidden states MB*':>19}")
        results = {}
        for label, budget in series:
            recs = memory(args, budget)
            base = recs[0]["peak_mb"]
            name = f"{label} ({budget})" if budget else label
            ratios = {}
            for r in recs:
                ratios[r["multiplier"]] = r["peak_mb"] / base
                print(f"{name:<22}{str(r['multiplier']) + 'x':>7}{r['max_len']:>8}"
                      f"{r['rows_per_batch']:>11}{r['peak_mb']:>13.0f}"
                      f"{ratios[r['multiplier']]:>7.3f}{r['baseline_mb']:>13.0f}"
                      f"{r['peak_mb'] - r['baseline_mb']:>10.0f}{r['hidden_states_mb']:>19.0f}")
            results[label] = ratios
        methods = sorted({r["method"] for r in recs})
        print("peak RSS: the process's peak resident memory during extraction "
              f"({', '.join(methods)}; baseline = resident after model load and warm-up)")
        print("* what keeping every layer's hidden states of one batch would take "
              "([L+1, B, T, d] fp32); the hooks never allocate it")
        ratios = results["token budget"]
        ok = max(ratios[2], ratios[8]) <= MEMORY_TARGET
        below |= not ok
        print(f"peak RSS at 2x / 8x vs 1x, max_batch_tokens {args.max_batch_tokens}: "
              f"{ratios[2]:.3f} / {ratios[8]:.3f} (target <= {MEMORY_TARGET:.2f}): "
              f"{'PASS' if ok else 'BELOW TARGET'}")
        if "rows only" in results:
            r = results["rows only"]
            print(f"  without a token budget (batch_size rows of any length): {r[2]:.3f} / "
                  f"{r[8]:.3f}")
        print(f"RESULT extraction_memory ratio_2x={ratios[2]:.3f} ratio_8x={ratios[8]:.3f} "
              f"target={MEMORY_TARGET} max_batch_tokens={args.max_batch_tokens}")
    return 1 if args.strict and below else 0


if __name__ == "__main__":
    sys.exit(main())
