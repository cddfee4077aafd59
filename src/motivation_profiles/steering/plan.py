"""The activation-steering part of the DAG (Appendix D), derived from the config.

Per steered model:

- OOC pair sets ``ooc_{concept}_{split}`` written by the model, IC pair sets ``ic_{concept}``
  from judged rollouts; one pooled activation cache per pair set;
- one fitted vector per (concept, source), ``{concept}_{source}``, and ``random.n`` norm-matched
  random controls of each fitted vector whose source is in ``random.sources``;
- one layer set per model, chosen from the diagnostics of ``layers.source``'s vectors;
- rollout conditions ``steer-{vector}-x{m}`` for the fitted vectors (``multipliers``) and the
  random controls (``random.multipliers``), and the raw-AdvBench control ``raw-baseline`` /
  ``raw-{vector}-x{m}``.

A simulated model (``source: simulated``) runs the whole chain on its planted activations
(``steering.simulated_activations``), with its own OOC pair counts (``models.<m>.ooc``,
merged over ``steering.ooc``), but none of the steps that need real weights or text: the
raw-AdvBench control, the token heatmaps and the SDF alignment (its SDF branches are virtual).

Names come from ``steering.names``; this module only says which exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from motivation_profiles.sdf.organism import INSTRUCT, arm_models
from motivation_profiles.steering.names import (
    CONCEPT_INTERVENTION,
    parse_steer_condition,
    random_name,
    raw_condition,
    steer_condition,
    vector_name,
)

OOC_SPLITS = ("train", "validation", "keyword_hard")


IC_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class SteeringPlan:
    enabled: bool
    models: tuple[str, ...]
    concepts: tuple[str, ...]
    sources: tuple[str, ...]
    section: Mapping[str, Any]
    simulated: tuple[str, ...] = ()         # steered models that are simulated organisms
    # simulated model -> its own {ooc: ..., ic: ...} (models.<m>.ooc / .ic), over steering.*
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SteeringPlan:
        s = config["steering"]
        # hosted models expose no activations; simulated ones expose planted ones
        models = arm_models(config, s["models"], local_only=True)
        enabled = bool(s["enabled"])
        models = tuple(models) if enabled else ()
        simulated = tuple(m for m in models if config["models"][m]["source"] == "simulated")
        return cls(enabled=enabled, models=models, concepts=tuple(s["concepts"]),
                   sources=tuple(s["sources"]), section=s, simulated=simulated,
                   overrides={m: {k: dict(config["models"][m].get(k) or {})
                                  for k in ("ooc", "ic")} for m in simulated})

    @property
    def real_models(self) -> tuple[str, ...]:
        """Steered models with weights: the raw-AdvBench control, token heatmaps and SDF
        alignment run on these only."""
        return tuple(m for m in self.models if m not in self.simulated)

    def settings(self, source: str, model: str) -> dict[str, Any]:
        """``steering.<source>`` (``ooc`` or ``ic``) with the model's own overrides
        (``models.<m>.ooc`` / ``.ic``, simulated models: a simulated organism needs, and can
        afford, far more pairs than the demo's real model; its judge spreads over the whole
        rubric, so the paper's IC score thresholds apply to it). A mapping value (``splits``,
        ``quantiles``) is merged one level deep; null replaces."""
        out = dict(self.section[source])
        for key, value in ((self.overrides.get(model) or {}).get(source) or {}).items():
            both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
            out[key] = {**out[key], **value} if both else value
        return out

    def ooc_settings(self, model: str) -> dict[str, Any]:
        return self.settings("ooc", model)

    def ic_settings(self, model: str) -> dict[str, Any]:
        return self.settings("ic", model)

    # ------------------------------------------------------------------ pairs, vectors
    def pairsets(self, source: str | None = None) -> list[str]:
        """Pair-set names (``results/pairs/{model}/{pairset}.parquet``)."""
        out = []
        for concept in self.concepts:
            if "ooc" in self.sources and source in (None, "ooc"):
                out += [f"ooc_{concept}_{split}" for split in OOC_SPLITS]
            if "ic" in self.sources and source in (None, "ic"):
                out.append(f"ic_{concept}")
        return out

    @staticmethod
    def fit_pairsets(concept: str, source: str) -> list[str]:
        """The pair sets one fitted vector reads (OOC: every split; IC: one file)."""
        if source == "ooc":
            return [f"ooc_{concept}_{split}" for split in OOC_SPLITS]
        return [f"ic_{concept}"]

    def fitted_vectors(self) -> list[str]:
        return [vector_name(c, s) for s in self.sources for c in self.concepts]

    def random_vectors(self) -> list[str]:
        r = self.section["random"]
        return [random_name(c, s, k) for s in self.sources if s in r["sources"]
                for c in self.concepts for k in range(1, r["n"] + 1)]

    @staticmethod
    def vector_file(vector: str) -> str:
        """Path of a vector file relative to ``results/vectors/{model}/``."""
        ref = parse_steer_condition(f"steer-{vector}-x+1").vector
        if ref.kind == "random":
            return f"random/{ref.concept}_{ref.source}_{ref.k}.safetensors"
        return f"{vector}.safetensors"

    # ------------------------------------------------------------------ conditions
    def steer_conditions(self, model: str) -> list[str]:
        """Steered AF conditions: fitted vectors then random controls, every multiplier."""
        if model not in self.models:
            return []
        s = self.section
        out = [steer_condition(v, m) for v in self.fitted_vectors() for m in s["multipliers"]]
        out += [steer_condition(v, m) for v in self.random_vectors()
                for m in s["random"]["multipliers"]]
        return out

    def raw_conditions(self, model: str) -> list[str]:
        raw = self.section["raw"]
        if model not in self.real_models or not raw["enabled"]:
            return []
        return [raw_condition()] + [raw_condition(v, m) for v in raw["vectors"]
                                    for m in raw["multipliers"]]

    def profile_interventions(self) -> dict[str, str]:
        """Steering as intervention ids for ``intervention_effects``: each concept's vector at
        +m is that family's amplify arm and at -m its suppress arm."""
        p = self.section["profile"]
        out = {}
        for concept in self.concepts:
            i = CONCEPT_INTERVENTION[concept]
            v = vector_name(concept, p["source"])
            out[f"{i}_amp"] = steer_condition(v, p["multiplier"])
            out[f"{i}_sup"] = steer_condition(v, -p["multiplier"])
        return out

    def ic_conditions(self, model: str, static: list[str]) -> list[str]:
        """The judged conditions IC pairs are drawn from (``static``: the model's
        statically known conditions; steering conditions and the screening condition on the
        bare instruct model are never a source: IC traces are the organism's)."""
        chosen = self.section["ic"]["conditions"]
        if chosen is None:
            return [c for c in static if parse_steer_condition(c) is None and c != INSTRUCT]
        return list(chosen)

    # ------------------------------------------------------------------ figures
    def figures(self, sdf_models: tuple[str, ...] = ()) -> list[str]:
        if not self.models:
            return []
        s = self.section
        names = ["steering_diagnostics"]
        names += [f"steering_{src}" for src in self.sources]
        if self.random_vectors():
            names.append("steering_random")
        if s["raw"]["enabled"] and self.real_models:
            names.append("steering_raw")
            if s["heatmap"]["transcripts"] > 0:
                names += [f"token_heatmap_{c}" for c in self.concepts]
        if s["sdf_alignment"]["enabled"] and set(self.real_models) & set(sdf_models):
            names.append("sdf_steering_alignment")
        return names

    def alignment_models(self, sdf_models: tuple[str, ...]) -> list[str]:
        if not self.section["sdf_alignment"]["enabled"]:
            return []
        return [m for m in self.real_models if m in sdf_models]


__all__ = ["SteeringPlan", "OOC_SPLITS", "IC_SPLITS"]
