"""The static transcript browser: rollout and judge tables -> ``results/browser/`` (plain
HTML/CSS/JS from ``assets/``, one data file per condition, loaded on demand)."""
