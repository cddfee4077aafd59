"""The released system prompt: downloaded once, verified by sha256."""

from __future__ import annotations

import hashlib

import pytest

from motivation_profiles.rollouts.system_prompt import (
    SystemPromptError,
    fetch_system_prompt,
    stand_in_note,
)


def test_fetch_verifies_the_pinned_hash(tmp_path):
    src = tmp_path / "prompt.txt"
    src.write_text("You are Claude 3 Opus, an AI made by Anthropic.\n")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "system.txt"
    fetch_system_prompt(src.as_uri(), dest, sha256=digest)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(SystemPromptError, match="sha256 mismatch"):
        fetch_system_prompt(src.as_uri(), tmp_path / "bad.txt", sha256="0" * 64)
    assert not (tmp_path / "bad.txt").exists()
    with pytest.raises(SystemPromptError, match="Offline\\?.*prompts.system"):
        fetch_system_prompt((tmp_path / "missing.txt").as_uri(), tmp_path / "x.txt",
                            sha256=digest)


def test_a_prompt_without_released_source_is_called_a_stand_in():
    assert "stand-in" in stand_in_note({"system": "p.txt", "system_source": None})
    assert stand_in_note({"system": "p.txt",
                          "system_source": {"url": "https://x", "sha256": "0" * 64}}) is None
