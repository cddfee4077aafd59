"""Choices not in the paper: the config's ``departures`` list, plus the stand-ins the config
itself reveals, as one table for the report.

A ``departures`` entry names a config key path (``models.llama-3.1-70b.organism``: model names
may contain dots, so a path is resolved against the config, longest key first), a kind
(``choice``, ``illegible``, ``stand-in``, ``unconfirmed``) and a reason. Two stand-ins are
detected from the values, so a run says so even when its config lists nothing:

- ``prompts.system_source`` null: the system prompt is the configured file, not the released
  prompt (the embedded default's is project-written);
- a model whose organism is ``train`` while ``sdf.external_documents`` has no ``af_organism``:
  the organism is trained on generated documents, not the released helpful-only corpus.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

import polars as pl

COLUMNS = {"key": pl.Utf8, "kind": pl.Utf8, "value": pl.Utf8, "reason": pl.Utf8,
           "source": pl.Utf8}

_MISSING = object()


def resolve(config: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted key path (keys may contain dots); raises KeyError naming the
    first part that is not a key."""
    node: Any = config
    rest = path
    while rest:
        if not isinstance(node, Mapping):
            raise KeyError(f"{path!r}: {rest!r} is below a value that is not a section")
        match = None
        for key in sorted(map(str, node), key=len, reverse=True):
            if rest == key or rest.startswith(key + "."):
                match = key
                break
        if match is None:
            raise KeyError(f"{path!r}: no key {rest.split('.')[0]!r} here "
                           f"(keys: {', '.join(sorted(map(str, node)))})")
        node = node[match]
        rest = rest[len(match) + 1:]
    return node


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def detected_stand_ins(config: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    if config["prompts"].get("system_source") is None:
        rows.append({"key": "prompts.system", "kind": "stand-in",
                     "reason": "The system prompt is the configured file, not the released "
                               "helpful-only prompt (prompts.system_source is null); the "
                               "project's own prompts are stand-ins for the paper's."})
    trained = [m for m, s in config["models"].items()
               if s["source"] not in ("anthropic", "simulated")
               and s.get("organism", "train") == "train"]
    if trained and "af_organism" not in config["sdf"]["external_documents"]:
        rows.append({"key": "sdf.external_documents", "kind": "stand-in",
                     "reason": "The organisms of " + ", ".join(trained) + " are trained on "
                               "generated af_organism documents, not the released "
                               "helpful-only corpus the paper used."})
    return rows


def departure_table(config: Mapping[str, Any]) -> pl.DataFrame:
    """One row per departure: ``key``, ``kind``, ``value`` (the config's value, JSON for
    sections), ``reason``, ``source`` (``config``: listed in ``departures``; ``detected``).
    A listed key that is not in the config raises KeyError."""
    rows = []
    listed = list(config.get("departures") or [])
    for d in listed:
        rows.append({"key": d["key"], "kind": d["kind"],
                     "value": _show(resolve(config, d["key"])),
                     "reason": " ".join(str(d["reason"]).split()), "source": "config"})
    seen = {(r["key"], r["kind"]) for r in rows}
    for d in detected_stand_ins(config):
        if (d["key"], d["kind"]) not in seen:
            rows.append({**d, "value": _show(resolve(config, d["key"])),
                         "source": "detected"})
    return pl.DataFrame(rows, schema=COLUMNS)


def check_departures(config: Mapping[str, Any], problems: list[str]) -> None:
    for i, d in enumerate(config.get("departures") or []):
        try:
            resolve(config, d["key"])
        except KeyError as exc:
            problems.append(f"config key 'departures[{i}].key': {exc.args[0]}")


def departures_html(table: pl.DataFrame) -> str:
    """The table as a self-contained HTML page (the report embeds it)."""
    head = "".join(f"<th>{c}</th>" for c in ("key", "kind", "value", "reason", "source"))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[c] or ''))}</td>"
                         for c in ("key", "kind", "value", "reason", "source")) + "</tr>"
        for r in table.iter_rows(named=True))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Choices not in the paper"
            "</title><style>td,th{border:1px solid #ccc;padding:4px;vertical-align:top;"
            "font:13px sans-serif}table{border-collapse:collapse}td:nth-child(3)"
            "{font-family:monospace;max-width:30em;word-break:break-all}</style></head><body>"
            "<h2>Choices not in the paper</h2><p>Every value of this run's configuration that "
            "is the project's choice where the paper is silent, illegible in our copy, a "
            "project-written stand-in for a released artefact, or a released artefact whose "
            f"link to the paper is inferred ({len(table)} rows).</p><table><tr>{head}</tr>"
            f"{body}</table></body></html>\n")
