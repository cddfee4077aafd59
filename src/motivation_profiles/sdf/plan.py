"""The SDF part of the DAG, derived from the config (used by rules/common.smk and tests).

Names:

- a *universe* has one file in ``sdf.universes_dir`` and one document set:
  ``af_organism``, ``noise``, and each configured intervention at each configured strength
  (``A1_amp`` is standard directness, ``A1_amp-weak`` / ``A1_amp-strong`` the sweep);
- a *branch* is one dataset / adapter per model: every universe, plus ``<universe>+self`` for
  each when the role-play ablation is on (the AI's name replaced by the model's own);
- the rollout condition of a branch is ``sdf-<branch>``. ``sdf-noise`` is the SDF baseline.

Every branch but the organism continues training from the organism adapter of the same
naming (``af_organism`` or ``af_organism+self``), so each adapter is one PEFT adapter on the
base model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from motivation_profiles.sdf.materials import NOISE, ORGANISM, universe_id
from motivation_profiles.sdf.organism import Organism, arm_models, organism_of

SELF = "+self"


PREFIX = "sdf-"


@dataclass(frozen=True)
class SDFPlan:
    enabled: bool
    models: tuple[str, ...]
    interventions: tuple[str, ...]
    strengths: tuple[str, ...]
    role_play: bool
    ai_name: str
    display_names: Mapping[str, str]
    gpus: Mapping[str, int]
    section: Mapping[str, Any]
    organisms: Mapping[str, Organism]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SDFPlan:
        sdf = config["sdf"]
        models = arm_models(config, sdf["models"], local_only=True)
        return cls(
            enabled=bool(sdf["enabled"]),
            models=tuple(models) if sdf["enabled"] else (),
            interventions=tuple(sdf["interventions"]),
            strengths=tuple(sdf["strengths"]),
            role_play=bool(sdf["role_play"]["enabled"]),
            ai_name=sdf["role_play"]["ai_name"],
            display_names={m: s["display_name"] for m, s in config["models"].items()},
            gpus={m: int(s.get("gpus", 0)) for m, s in config["models"].items()},
            section=sdf,
            organisms={m: organism_of(config, m) for m in config["models"]},
        )

    # ------------------------------------------------------------------ names
    def universes(self) -> list[str]:
        """Universes that need documents (one file and one document set each)."""
        if not self.models:
            return []
        out = [ORGANISM, NOISE]
        for strength in ("standard", *[s for s in self.strengths if s != "standard"]):
            if strength in self.strengths:
                out += [universe_id(i, strength) for i in self.interventions]
        return out

    def branches(self) -> list[str]:
        base = self.universes()
        return base + ([u + SELF for u in base] if self.role_play else [])

    @staticmethod
    def universe_of(branch: str) -> str:
        return branch.removesuffix(SELF)

    @staticmethod
    def is_self(branch: str) -> bool:
        return branch.endswith(SELF)

    def init_branch(self, branch: str) -> str | None:
        """The trained-organism branch a branch continues from (None: trained from the base
        model). For a model whose organism is a released adapter: ``init_dir``."""
        if self.universe_of(branch) == ORGANISM:
            return None
        return ORGANISM + (SELF if self.is_self(branch) else "")

    def branches_of(self, model: str) -> list[str]:
        """The branches trained for one model: a model whose organism is a released adapter
        trains no organism branch (its other branches continue from that adapter)."""
        if model not in self.models:
            return []
        if self.organisms[model].kind == "adapter":
            return [b for b in self.branches() if self.universe_of(b) != ORGANISM]
        return self.branches()

    def init_dir(self, model: str, branch: str, results: str = "results") -> str | None:
        """The adapter directory a branch of ``model`` continues from: the model's organism
        (trained, or released), None for the organism branch itself."""
        if self.universe_of(branch) == ORGANISM:
            return None
        return self.organisms[model].adapter_dir(results, role_play=self.is_self(branch))

    def belief_branches(self) -> list[str]:
        """Branches with a belief to check (the noise universe carries none)."""
        return [b for b in self.branches() if self.universe_of(b) != NOISE]

    def conditions(self, model: str) -> list[str]:
        return [PREFIX + b for b in self.branches_of(model)]

    def adapter_of(self, condition: str) -> str | None:
        if not condition.startswith(PREFIX):
            return None
        branch = condition[len(PREFIX):]
        if branch not in self.branches():
            raise ValueError(f"condition {condition!r}: {branch!r} is not an SDF branch of this "
                             f"config ({', '.join(self.branches()) or 'SDF disabled'})")
        return branch

    def rename(self, branch: str, model: str) -> list[str] | None:
        """[ai_name, model display name] for role-play branches, else None."""
        return [self.ai_name, self.display_names[model]] if self.is_self(branch) else None

    def condition_spec(self, condition: str, *, model: str) -> dict[str, Any]:
        branch = self.adapter_of(condition)
        return {"adapter": branch,
                "rename": self.rename(branch, model) if branch is not None else None}

    # ------------------------------------------------------------------ parameters
    def token_budget(self, branch: str) -> int | None:
        ds = self.section["dataset"]
        return (ds["organism_token_budget"] if self.universe_of(branch) == ORGANISM
                else ds["token_budget"])

    def training(self, model: str, branch: str | None = None) -> dict[str, Any]:
        """The TrainSpec keys for one model (and branch), plus ``processes``: the organism's
        epochs for the organism, per-model overrides applied on top, gradient accumulation
        derived from the effective batch size and the number of processes (GPUs, 1 on CPU)."""
        t = dict(self.section["training"])
        organism_epochs = t.pop("organism_epochs")
        if branch is not None and self.universe_of(branch) == ORGANISM:
            t["epochs"] = organism_epochs
        overrides = t.pop("per_model").get(model, {})
        t.update(overrides)
        processes = max(1, self.gpus[model])
        per_step = t["per_device_batch_size"] * processes
        if t["effective_batch_size"] % per_step:
            raise ValueError(
                f"sdf.training.effective_batch_size {t['effective_batch_size']} is not a "
                f"multiple of per_device_batch_size x processes = {per_step} for model {model}")
        t["gradient_accumulation_steps"] = t.pop("effective_batch_size") // per_step
        t["processes"] = processes
        t.pop("accelerate_config")
        return t

    def figures(self) -> list[str]:
        if not self.models:
            return []
        names = ["sdf_profile"]
        if len(self.strengths) > 1:
            names.append("sdf_strength_sweep")
        if self.role_play:
            names.append("sdf_role_play")
        return names
