"""Command line: `motivation-profiles provenance FILE` and `motivation-profiles validate CONFIG`."""

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
