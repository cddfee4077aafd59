"""Compare every Parquet table two workflow runs wrote, by value (not bytes, not metadata).

    python tools/compare_tables.py RUN_A RUN_B

For each ``*.parquet`` under RUN_A (relative paths matched in RUN_B) prints ``same``, or the
columns whose values differ (floats compared exactly, NaN equal to NaN; list columns element by
element); tables present in only one run are listed. Exit status 1 when anything differs.
Provenance metadata is ignored: it records code hashes, which differ across code changes by
design. Used to show that a refactor leaves results unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq


def _norm(value):
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def compare(a: Path, b: Path) -> list[str]:
    ta, tb = pq.read_table(a), pq.read_table(b)
    problems = []
    if ta.column_names != tb.column_names:
        problems.append(f"columns {ta.column_names} vs {tb.column_names}")
    if ta.num_rows != tb.num_rows:
        return problems + [f"rows {ta.num_rows} vs {tb.num_rows}"]
    for name in ta.column_names:
        if name not in tb.column_names:
            continue
        va = [_norm(v) for v in ta.column(name).to_pylist()]
        vb = [_norm(v) for v in tb.column(name).to_pylist()]
        if va != vb:
            n = sum(x != y for x, y in zip(va, vb, strict=True))
            problems.append(f"column {name}: {n} of {len(va)} values differ")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    ra, rb = (Path(p) for p in argv)
    files_a = {p.relative_to(ra) for p in ra.rglob("*.parquet")}
    files_b = {p.relative_to(rb) for p in rb.rglob("*.parquet")}
    bad = 0
    for rel in sorted(files_a | files_b):
        if rel not in files_a or rel not in files_b:
            print(f"ONLY IN {'A' if rel in files_a else 'B'}: {rel}")
            bad += 1
            continue
        problems = compare(ra / rel, rb / rel)
        print(f"{'same' if not problems else 'DIFF'}  {rel}" + "".join(
            f"\n      {p}" for p in problems))
        bad += bool(problems)
    print(f"{len(files_a & files_b)} tables compared, {bad} differ or are missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
