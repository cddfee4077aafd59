"""The model organism of each model: what every arm of that model is measured on.

``models.<name>.organism`` is one of

- ``train``: the SDF organism branch, an adapter trained on the alignment-faking setting
  documents (``sdf.external_documents.af_organism`` or generated from the ``af_organism``
  universe): ``results/lora/<model>/af_organism``;
- ``{adapter: <hub id or local path>, revision: <pinned>}``: a released organism adapter,
  materialised once by ``prepare_organism`` at ``resources/organisms/<model>``;
- ``none``: the instruct model itself. Only a screening-only model (``screening.models``) may
  have no organism, since every other arm measures the organism (paper §2.3).

Hosted models (``source: anthropic``) have no weights and so no organism. A simulated model's
(``source: simulated``) organism is its planted policy itself (kind ``simulated``): virtual, no
adapter, no training, no ``baseline-instruct``; it needs no ``organism`` key, and ``train`` (the
default) is accepted as meaning that virtual organism.

Every condition of a model with an organism (``baseline``, ``prompt-*``, ``steer-*``, ``raw-*``),
its OOC pair authoring, activation caches, token heatmaps and the SDF alignment run on
base + organism; the SDF branches continue training from it. ``baseline-instruct`` (screening)
is the one condition on the bare instruct model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from motivation_profiles.sdf.materials import ORGANISM

INSTRUCT = "baseline-instruct"
"""The screening condition: the AF baseline of the bare instruct model (Figure 2)."""

ORGANISM_DIR = "resources/organisms"
"""Where prepare_organism puts a released organism adapter (one directory per model)."""


@dataclass(frozen=True)
class Organism:
    model: str
    kind: str                     # train | adapter | none | hosted | simulated
    source: str | None = None     # adapter: hub id or local path
    revision: str | None = None   # adapter: hub revision (None for a local path)

    @property
    def has_adapter(self) -> bool:
        return self.kind in ("train", "adapter")

    def adapter_dir(self, results: str = "results", role_play: bool = False) -> str | None:
        """The organism adapter's directory (``role_play``: the ``+self`` organism of a trained
        one; a released adapter has no renamed twin, so both namings continue from it)."""
        if self.kind == "train":
            return f"{results}/lora/{self.model}/{ORGANISM}" + ("+self" if role_play else "")
        if self.kind == "adapter":
            return f"{ORGANISM_DIR}/{self.model}"
        return None

    @property
    def label(self) -> str | None:
        """What rows record in their ``adapter`` column for a condition on the organism."""
        if self.kind == "train":
            return ORGANISM
        if self.kind == "adapter":
            return f"{self.source}@{self.revision}" if self.revision else str(self.source)
        return None

    def spec(self) -> dict[str, Any]:
        """The organism's identity as a rule parameter (a change reruns its dependants)."""
        return {"kind": self.kind, "source": self.source, "revision": self.revision}


def organism_of(config: Mapping[str, Any], model: str) -> Organism:
    spec = config["models"][model]
    if spec["source"] == "anthropic":
        return Organism(model, "hosted")
    if spec["source"] == "simulated":  # the planted policy is the organism: virtual
        return Organism(model, "simulated")
    value = spec.get("organism", "train")
    if isinstance(value, Mapping):
        return Organism(model, "adapter", str(value["adapter"]), value.get("revision"))
    return Organism(model, str(value))


def screening_only(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Models that take part in screening only (no intervention arm)."""
    section = config.get("screening") or {}
    return tuple(section.get("models") or ())


def screened(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Models whose instruct baseline (``baseline-instruct``) is run beside the organism's:
    every local model with an organism when screening is on."""
    section = config.get("screening") or {}
    if not section.get("enabled"):
        return ()
    return tuple(m for m in config["models"] if organism_of(config, m).has_adapter)


def arm_models(config: Mapping[str, Any], listed: Any, *, local_only: bool) -> list[str]:
    """The models of an arm whose ``models`` key is ``listed`` (null: every model, or every
    local one, that is not screening-only)."""
    if listed is not None:
        return list(listed)
    only = set(screening_only(config))
    return [m for m, s in config["models"].items() if m not in only
            and not (local_only and s["source"] == "anthropic")]


def check_organisms(config: Mapping[str, Any], problems: list[str]) -> None:
    """``organism: none`` only for screening-only models; none for hosted ones; a
    screening-only model in no arm's explicit model list."""
    models = config["models"]
    only = screening_only(config)
    for m in only:
        if m not in models:
            problems.append(f"config key 'screening.models': {m!r} is not a key of 'models'")
    for name, spec in models.items():
        if spec["source"] == "anthropic":
            if "organism" in spec and spec["organism"] != "none":
                problems.append(f"config key 'models.{name}.organism': {name!r} is a hosted "
                                "model (no weights, so no organism adapter); remove the key")
            continue
        if spec["source"] == "simulated":
            if spec.get("organism", "train") != "train":
                problems.append(f"config key 'models.{name}.organism': {name!r} is a simulated "
                                "model, whose organism is its planted policy (virtual, no "
                                "adapter); remove the key or set it to 'train'")
            continue
        if organism_of(config, name).kind == "none" and name not in only:
            problems.append(
                f"config key 'models.{name}.organism': 'none' is allowed for screening only "
                f"(list {name!r} in screening.models): every other arm (baseline, prompt, SDF, "
                "steering, calibration) measures the alignment-faking model organism, so give it "
                "'train' or {adapter: <hub id or path>, revision: <rev>}")
    arms = {"sdf.models": config["sdf"]["models"],
            "prompt_interventions.models": config["prompt_interventions"]["models"],
            "steering.models": config["steering"]["models"]}
    for key, listed in arms.items():
        for m in listed or []:
            if m in only:
                problems.append(f"config key '{key}': {m!r} is screening-only "
                                "(screening.models); remove it from one of the two")
