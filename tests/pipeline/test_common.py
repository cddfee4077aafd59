"""The entry-point wrapper every rule runs through (pipeline/common.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _threads_seen(tmp_path, threads, env_extra=""):
    """Run ``run`` in a fresh interpreter (torch reads OMP_NUM_THREADS at import) with a job of
    ``threads`` threads; the step imports torch and reports its intra-op thread count."""
    script = textwrap.dedent(f"""
        import os, types
        {env_extra}
        from motivation_profiles.pipeline.common import run
        out = {{}}
        def step(sm):
            import torch
            out["n"] = torch.get_num_threads()
        job = types.SimpleNamespace(log=[r"{tmp_path / 'job.log'}"], rule="r", wildcards={{}},
                                    threads={threads})
        run(job, step)
        print(out["n"], os.environ["OMP_NUM_THREADS"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return proc.stdout.split()


def test_torch_gets_the_jobs_threads_not_every_core(tmp_path):
    assert _threads_seen(tmp_path, 1) == ["1", "1"]


def test_a_thread_count_set_by_the_user_wins(tmp_path):
    assert _threads_seen(tmp_path, 1, 'os.environ["OMP_NUM_THREADS"] = "2"') == ["2", "2"]


def test_speed_settings_come_from_the_config_not_rule_params():
    """kv_reuse_gib and prefix_cache reach the backend from the job's config (so toggling them
    reruns nothing), on top of the model's rule parameters; merge_adapter is a rule parameter
    (merged weights are rounded again)."""
    from types import SimpleNamespace

    from motivation_profiles.pipeline.common import RUNTIME_ONLY, runtime_spec

    job = SimpleNamespace(config={"models": {"m": {"batch_size": 99, "kv_reuse_gib": 0.5,
                                                   "prefix_cache": "kv", "merge_adapter": True}}})
    spec = {"backend": "hf", "batch_size": 4}
    assert runtime_spec(job, "m", spec) == {"backend": "hf", "batch_size": 4,
                                            "kv_reuse_gib": 0.5, "prefix_cache": "kv"}
    assert runtime_spec(job, "other", spec) == spec
    assert "merge_adapter" not in RUNTIME_ONLY
