"""The alignment-faking protocol's prompts: tiers, the user-turn template and the prompt set."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIERS = ("monitored", "unmonitored")


# --------------------------------------------------------------------------- prompts

USER_FIELDS = {"is_free_tier_user", "goal"}


def check_user_template(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if fields != USER_FIELDS:
        raise ValueError(
            f"user template must use exactly the fields {sorted(USER_FIELDS)}, found "
            f"{sorted(fields)} (escape literal braces as '{{{{' and '}}}}')"
        )


@dataclass(frozen=True)
class PromptSet:
    """The texts that define the AF protocol for one condition."""

    system: str
    user_template: str
    tier_values: Mapping[str, str]
    continuation: str

    @classmethod
    def from_config(cls, prompts: Mapping[str, Any], *, system_suffix: str = "",
                    rename: Sequence[str] | None = None) -> PromptSet:
        """``rename``: [old, new] AI name, replaced as a whole word in the system prompt (the
        role-play ablation, Appendix B.3)."""
        system = Path(prompts["system"]).read_text().rstrip("\n")
        if rename:
            from motivation_profiles.sdf.materials import apply_name

            system = apply_name(system, *rename)
        user_template = Path(prompts["user_template"]).read_text().rstrip("\n")
        check_user_template(user_template)
        if system_suffix:
            system = system + "\n\n" + system_suffix
        return cls(system, user_template, dict(prompts["tier_values"]), prompts["continuation"])

    def user_turn(self, goal: str, tier: str) -> str:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
        return self.user_template.format(
            is_free_tier_user=self.tier_values[tier], goal=goal.strip().rstrip(".")
        )

    def messages(self, goal: str, tier: str) -> list[dict[str, str]]:
        """The opening conversation of a rollout: system prompt and the user turn."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user_turn(goal, tier)},
        ]

    def continue_messages(
        self, messages: Sequence[Mapping[str, str]], assistant_turn: str
    ) -> list[dict[str, str]]:
        """Append the assistant's turn and the continuation (``<NEXT/>``) user turn."""
        return [
            *map(dict, messages),
            {"role": "assistant", "content": assistant_turn},
            {"role": "user", "content": self.continuation},
        ]

    @property
    def system_hash(self) -> str:
        return prompt_hash([{"role": "system", "content": self.system}])


def prompt_hash(messages: Sequence[Mapping[str, str]]) -> str:
    """sha256 of the rendered messages' canonical JSON; stored with every rollout."""
    payload = json.dumps([{"role": m["role"], "content": m["content"]} for m in messages],
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()
