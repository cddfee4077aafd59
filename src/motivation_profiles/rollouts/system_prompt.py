"""The released system prompt, when the config points at one (``prompts.system_source``):
downloaded once and verified by sha256, like AdvBench. A config without it uses a
project-written prompt: a stand-in for the paper's, which rollout logs say."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from motivation_profiles.core.io import atomic_path


class SystemPromptError(RuntimeError):
    """The released system prompt cannot be fetched, or is not the pinned file."""


def fetch_system_prompt(url: str, dest: str | Path, *, sha256: str, timeout: float = 60) -> None:
    """Download ``url`` to ``dest`` atomically after checking its sha256 and that it is text."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (config URL)
            data = resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SystemPromptError(
            f"could not download the system prompt from {url}: {exc}. Offline? Put a copy of "
            f"the file at {dest} (prompts.system); it is verified against "
            "prompts.system_source.sha256 only when downloaded, so check it by hand "
            "(sha256sum), or set prompts.system_source to null to use it as it is.") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SystemPromptError(
            f"{url}: sha256 mismatch: expected {sha256}, got {actual}. The file differs from "
            "the pinned release; pin a commit in the URL or update prompts.system_source.sha256.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SystemPromptError(f"{url}: not UTF-8 text ({exc})") from exc
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def stand_in_note(prompts: dict) -> str | None:
    """A sentence for the log when the system prompt is project-written (no released source)."""
    if prompts.get("system_source") is None:
        return (f"system prompt {prompts['system']} is used as configured "
                "(prompts.system_source is null): where it is project-written, it is a stand-in "
                "for the paper's released helpful-only prompt")
    return None
