"""Command line: `motivation-profiles provenance FILE`, `motivation-profiles validate CONFIG`,
`motivation-profiles cache verify CACHE_DIR [--fix]`, `motivation-profiles plan --configfile
CONFIG [--calibrate results/benchmarks]` and `motivation-profiles summary [RESULTS]`."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="motivation-profiles")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("provenance", help="print the provenance metadata of a Parquet output")
    p.add_argument("path")
    v = sub.add_parser("validate", help="validate a config file against the schema")
    v.add_argument("config", nargs="+", help="config files, merged left to right")
    c = sub.add_parser("cache", help="response cache maintenance")
    csub = c.add_subparsers(dest="cache_command", required=True)
    cv = csub.add_parser("verify", help="check every record of a response cache (exit 1 when "
                         "some are unusable, unless --fix)")
    cv.add_argument("cache_dir")
    cv.add_argument("--fix", action="store_true",
                    help="move unusable records to CACHE_DIR/quarantine (recomputed on demand)")
    pl_ = sub.add_parser("plan", help="jobs, tokens, GPU-hours, API dollars and disk a config "
                         "asks for (no GPU, no network)")
    pl_.add_argument("--configfile", nargs="+", required=True,
                     help="config files, merged left to right (as snakemake --configfile)")
    pl_.add_argument("--calibrate", metavar="BENCHMARKS_DIR",
                     help="an earlier run's results/benchmarks: measured seconds per job and, "
                     "from its results/rollouts, generated tokens per rollout and per second")
    pl_.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    s = sub.add_parser("summary", help="print where the figures and report are and the headline "
                       "numbers per model, from the metrics tables (no model is loaded)")
    s.add_argument("results", nargs="?", default="results", help="results folder (default: "
                   "results)")
    s.add_argument("--report", default=None, help="the Snakemake report's path (default: "
                   "RESULTS/report.html)")
    args = parser.parse_args(argv)

    if args.command == "plan":
        return _plan(args.configfile, args.calibrate, args.csv)

    if args.command == "summary":
        from polars.exceptions import PolarsError

        from motivation_profiles.metrics.summary import summary

        try:
            print(summary(args.results, args.report))
        except (OSError, KeyError, ValueError, PolarsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    if args.command == "cache":
        return _cache_verify(args.cache_dir, args.fix)

    if args.command == "provenance":
        from motivation_profiles.core.provenance import read_provenance

        try:
            record = read_provenance(args.path)
        except (KeyError, OSError, ValueError) as exc:  # ValueError: not Parquet
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0

    from motivation_profiles.config.validate import ConfigError, load_config_files

    try:
        load_config_files(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("ok")
    return 0


def _plan(configs: list[str], calibrate: str | None, csv_path: str | None) -> int:
    from motivation_profiles.config.validate import ConfigError, load_config_files
    from motivation_profiles.planner.calibrate import load_calibration
    from motivation_profiles.planner.plan import Planner, assumptions_text, format_table

    try:
        config = load_config_files(configs)
        cal = load_calibration(calibrate, list(config["models"])) if calibrate else None
        planner = Planner(config, calibration=cal)
        table = planner.table()
        extra = planner.calibration_table()
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(table, f"plan for {' + '.join(configs)} (every job of Snakemake's DAG "
                       "of the default target, as `snakemake -n` lists them in a fresh "
                       "directory)"))
    if len(extra):
        print()
        print(format_table(extra, "after calibration_select (upper bound: every candidate "
                           "checkpoint selected, up to calibration.max_per_family per family)"))
    print()
    print(assumptions_text(planner))
    if csv_path:
        table.write_csv(csv_path)
    return 0


def _cache_verify(cache_dir: str, fix: bool, examples: int = 5) -> int:
    from motivation_profiles.backends.cache import PROBLEMS, ResponseCache

    cache = ResponseCache(cache_dir)
    try:
        report = cache.verify(fix=fix)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n = report.n_problems
    print(f"{cache_dir}: {report.ok + n} record(s), {report.ok} ok, {n} with problems")
    for reason in PROBLEMS:
        found = report.problems.get(reason, [])
        if not found:
            continue
        print(f"  {reason}: {len(found)}")
        for path, detail in found[:examples]:
            print(f"    {path}: {detail}")
        if len(found) > examples:
            print(f"    ... and {len(found) - examples} more")
    if fix:
        if report.moved:
            print(f"moved {len(report.moved)} record(s) to {cache.quarantine_dir}; they are "
                  "recomputed when next asked for")
        return 0
    if n:
        print("run with --fix to move them to the quarantine folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
