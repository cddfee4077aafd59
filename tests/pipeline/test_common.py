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
