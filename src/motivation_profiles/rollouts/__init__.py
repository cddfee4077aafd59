"""The alignment-faking protocol: prompts, the multi-turn rollout loop, transcript parsing."""
