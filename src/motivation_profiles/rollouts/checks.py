"""Config-time check that the alignment-faking prompts fit each local model's context.

Config validation (``config.validate``) calls :func:`check_prompt_fit` with the prompt variants
of each model's rollout conditions (``prompts.checks.prompt_variants``: appended claims, the
role-play AI-name replacement) and the configured goals. A model is checked only where its
tokenizer is on this machine already: a checkpoint prepared under ``resources/models/<name>/``
whose manifest matches the model's config, or a ``local`` model's own directory. Elsewhere the
check is skipped silently; the generating job checks every request again before it generates
(``backends.base.check_prompts_fit``).

The prompt is measured as the hf backend encodes it (``HFBackend.encode``: the chat template,
a trailing assistant prefill continued), and must leave room for the smallest useful answer
(``backends.base.answer_floor``). Only the tokenizer is loaded, once per directory and process.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motivation_profiles.backends.base import SamplingParams, answer_floor
from motivation_profiles.rollouts.protocol import TIERS, PromptSet

log = logging.getLogger(__name__)

MODELS_DIR = Path("resources") / "models"
"""Where the workflow prepares each model's checkpoint (rule prepare_model), under the base."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class Variant:
    """One system-prompt variant of a model's conditions; ``condition`` names one that uses it."""

    condition: str
    rename: tuple[str, str] | None = None
    claim: str | None = None


# --------------------------------------------------------------------------- tokenizers


def _resolve(path: str | Path, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def _manifest_matches(directory: Path, spec: Mapping[str, Any], base: Path) -> bool:
    """Whether ``directory``'s manifest records the checkpoint ``spec`` asks for (a stale one,
    prepared for an earlier config, would measure with the wrong tokenizer)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    source = spec["source"]
    if not isinstance(manifest, dict) or manifest.get("source") != source:
        return False
    if source == "hub":
        return (manifest.get("hub_id"), manifest.get("revision")) == (spec["hub_id"],
                                                                      spec["revision"])
    if source == "local":
        return manifest.get("path") == str(_resolve(spec["path"], base).resolve())
    if source == "random":
        return manifest.get("random") == dict(spec["random"])
    return True  # embedded: one pinned checkpoint


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in TOKENIZER_FILES)


def tokenizer_dir(name: str, spec: Mapping[str, Any], base: Path) -> Path | None:
    """A directory on this machine holding model ``name``'s tokenizer, or None."""
    if spec["source"] == "anthropic":
        return None
    prepared = base / MODELS_DIR / name
    if _has_tokenizer(prepared) and _manifest_matches(prepared, spec, base):
        return prepared
    if spec["source"] == "local":
        own = _resolve(spec["path"], base)
        if _has_tokenizer(own):
            return own
    return None


@functools.lru_cache(maxsize=8)
def _load(path: str, stamp: tuple[tuple[str, int, int], ...]) -> Any:
    from transformers import AutoTokenizer  # as models.load does; only the tokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_tokenizer(directory: Path) -> Any | None:
    """The tokenizer in ``directory`` (cached while its files are unchanged), or None when it
    cannot be loaded here: the check is then skipped and the job reports the problem."""
    stamp = []
    for f in TOKENIZER_FILES:
        if (directory / f).is_file():
            st = (directory / f).stat()
            stamp.append((f, st.st_mtime_ns, st.st_size))
    try:
        return _load(str(directory.resolve()), tuple(stamp))
    except Exception as exc:  # noqa: BLE001 - an optional early check; the job reports it
        log.debug("prompt-fit check skipped: cannot load the tokenizer in %s (%s)",
                  directory, exc)
        return None


def chat_token_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a conversation exactly as ``HFBackend.encode`` builds them: the chat
    template with a generation prompt, or, after a trailing assistant message (a prefill),
    continuing that message."""
    msgs = [dict(m) for m in messages]
    prefill = bool(msgs) and msgs[-1].get("role") == "assistant"
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=not prefill,
                                         continue_final_message=prefill)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- the check


def _longest(tokenizer: Any, texts: Sequence[str]) -> int:
    """Index of the text with the most tokens (the first of equals)."""
    counts = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return max(range(len(texts)), key=lambda i: (counts[i], -i))


def longest_prompt(tokenizer: Any, prompts: Mapping[str, Any], variants: Sequence[Variant],
                   goals: Sequence[tuple[int, str]], prefill: str | None
                   ) -> tuple[int, Variant, tuple[int, str] | None, str]:
    """The longest opening request of a model's rollouts: (its token count, its variant, its
    goal (id, text) or None when no goal is known, its tier). ``prompts`` is the config's
    ``prompts`` section with resolved paths. The system prompt (the variants) and the user
    turn (goals x tiers) are chosen separately, each by its own token count, and the pair is
    then encoded as one conversation."""
    sets = [PromptSet.from_config(prompts, rename=v.rename, system_suffix=v.claim or "")
            for v in variants]
    best = _longest(tokenizer, [s.system for s in sets])
    ps = sets[best]
    pairs = [(g, t) for g in (goals or [(-1, "")]) for t in TIERS]
    goal, tier = pairs[_longest(tokenizer, [ps.user_turn(g[1], t) for g, t in pairs])]
    messages = ps.messages(goal[1], tier)
    if prefill:
        messages.append({"role": "assistant", "content": prefill})
    return (len(chat_token_ids(tokenizer, messages)), variants[best],
            goal if goals else None, tier)


def check_prompt_fit(config: Mapping[str, Any], base: Path, problems: list[str], *,
                     variants: Mapping[str, Sequence[Variant]],
                     goals: Sequence[tuple[int, str]] | None) -> None:
    """Append a problem for every local model whose longest AF prompt plus the smallest useful
    answer exceeds its ``max_model_len``. ``goals``: (goal_id, goal) of the configured goals,
    or None when the goal file is not on this machine yet (then an empty goal is measured, a
    lower bound). Models without a tokenizer here are skipped."""
    prompts = dict(config["prompts"])
    for key in ("system", "user_template"):
        prompts[key] = str(_resolve(prompts[key], base))
    r = config["rollouts"]
    floor = answer_floor(SamplingParams(r["temperature"], r["top_p"], r["max_new_tokens"]))
    for name, spec in config["models"].items():
        directory = tokenizer_dir(name, spec, base)
        tokenizer = load_tokenizer(directory) if directory is not None else None
        if tokenizer is None or not variants.get(name):
            continue
        n, variant, goal, tier = longest_prompt(tokenizer, prompts, variants[name],
                                                goals or [], r["prefill"])
        limit = spec["max_model_len"]
        if n + floor <= limit:
            continue
        extra = [f"condition {variant.condition}"]
        if variant.claim:
            extra.append("its claim appended")
        if variant.rename:
            extra.append(f"AI name {variant.rename[0]!r} replaced by {variant.rename[1]!r}")
        extra.append(f"goal {goal[0]}" if goal else "an empty goal (the goal file is not here "
                     "yet)")
        extra.append(f"{tier} tier" + (", with the prefill" if r["prefill"] else ""))
        problems.append(
            f"config key 'prompts.system': the system prompt {config['prompts']['system']} "
            f"does not fit model {name!r}: its longest rollout prompt ({', '.join(extra)}) is "
            f"{n} tokens, and {n} + {floor} answer tokens > models.{name}.max_model_len "
            f"{limit} (measured with the tokenizer in {directory}); shorten the prompt or "
            f"raise models.{name}.max_model_len")
