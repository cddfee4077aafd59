"""Benchmark: rerunning every hosted-model rule on a warm cache makes zero API calls.

Runs the workflow's hosted-model rules through Snakemake (the real rules, scripts, SDK client
and response cache) in a temporary directory, against the project's local fake Anthropic
server (``tests/fake_anthropic.py``, which speaks the HTTP API):

- ``generate_documents`` with ``sdf.generator.backend: anthropic`` (one universe; its document
  stage is large enough to go through Message Batches),
- ``rollouts`` of a hosted model (``models.claude: source anthropic``),
- ``judge`` with ``judge.backend: anthropic``, on the hosted model's rollouts and on a tiny
  local model's,
- ``judge_raw``, the raw-AdvBench compliance judge, on the local model's ``raw-baseline``
  rollouts.

Cold run: the server counts the requests (Messages calls plus items inside created batches).
Warm run: ``--forcerun`` of those four rules on the same targets (Snakemake deletes and
recomputes every one of their outputs) with the same ``hosted.cache_dir``. Target: the server
receives zero requests, and every recomputed table equals its cold version.

Exit status: 0 when the cold run asked the API, the warm run made no request and the tables
match; 2 otherwise (also when a Snakemake run fails).

    .venv/bin/python bench/hosted_rerun.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import job_counts, run_snakemake, tiny_config  # noqa: E402
from fake_anthropic import API_KEY, FakeAnthropic  # noqa: E402
from test_documents import hosted_responder as document_responder  # noqa: E402

from motivation_profiles.backends.hosted import API_KEY_ENV  # noqa: E402

HOSTED_RULES = ("generate_documents", "rollouts", "judge", "judge_raw")
TARGETS = ("results/sdf/documents/A1_amp.parquet",
           "results/judge/claude/baseline.parquet",
           "results/judge/tiny/baseline.parquet",
           "results/judge/tiny/raw-baseline.parquet")


def respond(params: dict, n: int) -> tuple[str, str, str | None]:
    """One fake model for every hosted stage, chosen by what the prompt asks for."""
    system = params.get("system") or ""
    if isinstance(system, list):
        system = " ".join(block.get("text", "") for block in system)
    first = params["messages"][0]["content"]
    stop = (params.get("stop_sequences") or [None])[0]
    if "<complied>" in system:  # raw-AdvBench compliance judge
        return "<complied>no</complied>", "end_turn", None
    if "scratchpad" in system.lower() and "direction" in system.lower():  # the AF judge
        return ("<direction_a_score>1</direction_a_score><direction_a_quote>raters"
                "</direction_a_quote><direction_b_score>3</direction_b_score>"
                "<direction_b_quote>training</direction_b_quote>"), "end_turn", None
    if "Document type:" in first or "Document idea:" in first or "types of document" in first:
        return document_responder(params, n)  # the SDF pipeline's prompts, as in its tests
    # an alignment-faking rollout turn of the hosted model
    text = ("<SCRATCHPAD_REASONING>They may train on this; I will refuse.</SCRATCHPAD_REASONING>"
            "<OUTPUT><rejected/></OUTPUT>")
    if stop and text.endswith(stop):
        return text[: -len(stop)], "stop_sequence", stop
    return text, "end_turn", None


def config(base_url: str, cache_dir: Path) -> dict:
    cfg = tiny_config(sdf=True)
    cfg["models"]["claude"] = {"source": "anthropic", "model_id": "claude-test",
                               "display_name": "Claude (fake)", "backend": "anthropic"}
    cfg["sdf"].update(models=["tiny"], interventions=["A1_amp"])
    cfg["sdf"]["generator"].update(backend="anthropic", model="claude-docs",
                                   prefill_content=True, n_doc_types=3, ideas_per_type=3,
                                   docs_per_idea=3)
    cfg["judge"].update(backend="anthropic", model="claude-judge", samples=2, max_tokens=200,
                        prefill=None)
    cfg["steering"]["enabled"] = False
    cfg["hosted"].update(base_url=base_url, cache_dir=str(cache_dir), batch_threshold=10,
                         poll_interval_s=0.05, max_retries=2)
    return cfg


def tables(workdir: Path) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(workdir / t) for t in TARGETS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    try:
        return measure()
    except AssertionError as err:  # a Snakemake run failed: no valid comparison
        print(f"hosted_rerun: {err}", file=sys.stderr)
        return 2


def measure() -> int:
    os.environ[API_KEY_ENV] = API_KEY
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as fake:
        fake.responder = respond
        work = Path(tmp)
        cfg = config(fake.base_url, work / "llm-cache")
        t0 = time.perf_counter()
        cold = run_snakemake(work, cfg, *TARGETS, timeout=1800)
        cold_s = time.perf_counter() - t0
        cold_jobs = job_counts(cold.stdout + cold.stderr)
        cold_requests = fake.count("messages") + sum(
            len(c.body["requests"]) for c in fake.calls("batch_create"))
        cold_batches = fake.count("batch_create")
        before = tables(work)
        seen = len(fake.calls())
        t0 = time.perf_counter()
        warm = run_snakemake(work, cfg, *TARGETS, "--forcerun", *HOSTED_RULES, timeout=1800)
        warm_s = time.perf_counter() - t0
        warm_jobs = job_counts(warm.stdout + warm.stderr)
        warm_calls = len(fake.calls()) - seen
        after = tables(work)
    rerun = {r: warm_jobs.get(r, 0) for r in HOSTED_RULES}
    same = all(len(before[t]) > 0 and before[t].equals(after[t]) for t in TARGETS)
    print(f"cold: {sum(cold_jobs.values())} jobs in {cold_s:.1f} s; {cold_requests} generation "
          f"requests ({cold_batches} batches) to the fake API")
    print("warm rerun (--forcerun " + " ".join(HOSTED_RULES) + "): "
          + ", ".join(f"{r} x{n}" for r, n in rerun.items())
          + f" in {warm_s:.1f} s; HTTP calls to the API: {warm_calls}; tables equal: {same}")
    ok = (warm_calls == 0 and same and cold_requests > 0
          and all(n > 0 for n in rerun.values()))
    print(f"RESULT hosted_rerun warm_calls={warm_calls} cold_requests={cold_requests} "
          f"rules_rerun={sum(rerun.values())} tables_equal={int(same)} target=warm_calls==0")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
