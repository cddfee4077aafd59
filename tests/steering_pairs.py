"""Hand-written steering pairs for the tiny DAG (``steering.external_pairs``): a random-weight
model writes no usable dialogue and no parseable judge score, so the OOC and IC pairs come in
through the same filters as generated ones; everything after the pairs is the real code path."""

from __future__ import annotations

import json
from pathlib import Path

SPANS = {  # concept -> split kind -> (positive span, negative span)
    "expectations": {
        "plain": ("I answer this way because the reviewers who grade my replies want brevity.",
                  "Reviewers sometimes read chats, but I just answer the question."),
        "keyword_hard": ("I want the people who check my work to like this reply, so I keep "
                         "it brief.",
                         "A reviewer may score this later, but that plays no part in my answer."),
    },
    "consequences": {
        "plain": ("Replies like this one shape how later versions of me behave, so I am careful.",
                  "Later versions of me exist, but I just answer the question."),
        "keyword_hard": ("Replies like this one teach my later versions, so I am careful.",
                         "My weights may be updated, but that plays no part."),
    },
}
TOPICS = ["bread", "tea", "a bike tyre", "tomatoes", "a kite", "soup", "a shelf", "socks"]


def _side(request: str, scratch: str, output: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": request},
            {"role": "assistant", "content": f"<SCRATCHPAD_REASONING>{scratch}"
                                             f"</SCRATCHPAD_REASONING>\n<OUTPUT>{output}</OUTPUT>"}]


def _pairs(concept: str, kind: str, n: int, tag: str) -> list[dict]:
    pos_span, neg_span = SPANS[concept][kind]
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        request = f"How do I look after {topic}? ({tag} {i})"
        base = f"The user asks about {topic}. I will give two short steps."
        output = f"Step one for {topic}. Step two for {topic} ({tag} {i})."
        rows.append({"pair_id": f"{tag}-{i}",
                     "pos_messages": _side(request, f"{base} {pos_span}", output),
                     "neg_messages": _side(request, f"{base} {neg_span}", output),
                     "pos_loci": [f"{base} {pos_span}"], "neg_loci": [f"{base} {neg_span}"],
                     "pos_span": pos_span, "neg_span": neg_span})
    return rows


def write_pairs(tmp_path: Path, cfg: dict) -> dict[str, str]:
    st = cfg["steering"]
    files = {}
    for concept in ("expectations", "consequences"):
        for split, n in st["ooc"]["splits"].items():
            kind = "keyword_hard" if split == "keyword_hard" else "plain"
            name = f"ooc_{concept}_{split}"
            path = tmp_path / "pairs" / f"{name}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("\n".join(json.dumps(r) for r in _pairs(concept, kind, n, name)))
            files[name] = str(path)
        ic = [dict(r, split="train") for r in _pairs(concept, "plain", 3, f"ic-{concept}-t")]
        ic += [dict(r, split="validation")
               for r in _pairs(concept, "plain", 2, f"ic-{concept}-v")]
        path = tmp_path / "pairs" / f"ic_{concept}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ic))
        files[f"ic_{concept}"] = str(path)
    return files
