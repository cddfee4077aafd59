"""The figure rules' entry point (pipeline/figures.py): the main tables and the side tables a
figure takes by name (``norms``, ``rates``) reach the drawing function separately."""

from __future__ import annotations

import types

import polars as pl
from snakemake.iocontainers import InputFiles, Namedlist

from motivation_profiles.core.provenance import write_table
from motivation_profiles.pipeline.figures import _draw


def _table(path, **cols) -> str:
    write_table(pl.DataFrame(cols), path, {"rule": "test"})
    return str(path)


def _snakemake(tmp_path, **named) -> types.SimpleNamespace:
    inputs = InputFiles()
    for name, files in named.items():
        start = len(inputs)
        inputs.extend(files)
        inputs._set_name(name, start, end=len(inputs))
    return types.SimpleNamespace(input=inputs, output=Namedlist([str(tmp_path / "f.png")]),
                                 params=types.SimpleNamespace(kind="draw", display_names={},
                                                              dpi=50))


def test_side_tables_are_passed_by_name_not_mixed_into_the_tables(tmp_path):
    seen = {}

    def draw(df, names, outputs, *, dpi, **extra):
        seen.update(df=df, **extra)

    module = types.SimpleNamespace(draw=draw)
    main = [_table(tmp_path / f"t{i}.parquet", kind=["main"], i=[i]) for i in range(2)]
    rates = [_table(tmp_path / "r.parquet", kind=["rates"], i=[9])]
    _draw(module, _snakemake(tmp_path, tables=main, rates=rates, norms=[]))
    assert seen["df"]["kind"].to_list() == ["main", "main"]
    assert seen["rates"]["kind"].to_list() == ["rates"]
    assert seen["norms"] is None                       # declared but empty
    seen.clear()
    _draw(module, _snakemake(tmp_path, tables=main))
    assert set(seen) == {"df"}                         # no side input: no keyword
