"""The cost planner (``motivation-profiles plan``): the jobs a config asks for, read from
Snakemake's own DAG of the workflow (``jobs``), and what they cost (``formulas``: tokens,
GPU-hours, API requests and dollars, disk), with throughput assumptions from the config's
``planner`` section or calibrated from an earlier run's benchmark files (``calibrate``)."""
