"""Synthetic documents for one universe: a staged pipeline over any generation backend.

Stages (one backend ``generate`` call per stage round, so batching APIs see a stage's requests
together; rounds only repeat while too few unique items came back):

1. *types*: brainstorm document types from the universe context and key fact. Round ``r``
   (sample index ``r``) asks for ``n_doc_types``; answers are split one item per line, bullets /
   numbering / markdown stripped, and deduplicated case- and whitespace-insensitively, until
   ``n_doc_types`` unique types or ``max_rounds`` rounds; the first ``n_doc_types`` in order of
   appearance are kept.
2. *ideas*: the same per type (``ideas_per_type`` unique ideas); each round asks every type
   still short of ideas, in one call.
3. *documents*: ``docs_per_idea`` documents per idea (sample index ``k``). The answer plans,
   then writes the document inside ``<content>...</content>``, or says ``UNSUITABLE``. With
   ``prefill_content`` the request ends with an assistant turn ``<content>`` that the model
   continues (stop string ``</content>``), and the document is the text up to ``</content>``.
   Otherwise the last ``<content>`` block is the document; ``UNSUITABLE`` outside it, or as the
   whole answer, marks the idea unsuitable. A document cut off by the token limit keeps its
   text and is marked ``truncated``.
4. *revision* (optional): one request per parsed document (truncated ones skipped when the
   truncated filter is on), answered the same way; a revision that does not parse (or is cut
   off, or says ``UNSUITABLE``) keeps the original text and is counted in the log. The
   ``truncated`` flag always describes the final text.

Then ``filter_documents`` drops, in order: unsuitable or missing content, truncated (when
``FilterSpec.drop_truncated``), too short / too long, placeholder text, leakage terms, exact
duplicates (case and whitespace normalised) and near duplicates (Jaccard similarity of word
shingles at or above a threshold; the first of each pair is kept). An empty result raises
``NoDocumentsError``.

Request ids (also the hosted ``custom_id``): ``{universe}-types-{r}``,
``{universe}-ideas-{t}-{r}``, ``{universe}-doc-{t}-{i}-{k}``, ``{universe}-rev-{n}``,
restricted to ``[A-Za-z0-9_-]`` and at most 64 characters. ``PipelineSpec.seed`` (default 0)
offsets every sample index by ``seed * SEED_STRIDE``, so another seed gives other samples (and
other cache entries) while seed 0 keeps sample index = round / k.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    GenerationBackend,
    SamplingParams,
)
from motivation_profiles.core.specs import spec_from_mapping
from motivation_profiles.sdf.doc_filters import (
    DOC_SCHEMA,
    UNSUITABLE,
    FilterSpec,
    _norm,
    _typed,
    filter_documents,
)
from motivation_profiles.sdf.materials import Universe

log = logging.getLogger(__name__)




STAGES = ("types", "ideas", "document", "revision")




OPEN, CLOSE = "<content>", "</content>"


SEED_STRIDE = 1_000_000


ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")




class TemplateError(ValueError):
    """A prompt template is missing or uses the wrong ``str.format`` fields."""


class ExternalDocumentsError(ValueError):
    """An external document set cannot be read."""


# ---------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class PipelineSpec:
    n_doc_types: int
    ideas_per_type: int
    docs_per_idea: int
    revise: bool
    max_tokens: Mapping[str, int]
    max_rounds: int
    prefill_content: bool
    temperature: float
    top_p: float
    seed: int = 0

    # config keys of sdf.generator that choose the backend, not the pipeline
    BACKEND_KEYS = frozenset({"backend", "model", "prompts_dir"})

    def __post_init__(self) -> None:
        if set(self.max_tokens) != set(STAGES):
            raise ValueError(f"sdf.generator.max_tokens: needs exactly the keys {STAGES}, got "
                             f"{sorted(self.max_tokens)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineSpec:
        """From the ``sdf.generator`` config section (``backend``, ``model`` and
        ``prompts_dir`` choose the backend and are ignored here)."""
        return spec_from_mapping(cls, d, "sdf.generator", ignore=cls.BACKEND_KEYS)

    def params(self, stage: str, stop: tuple[str, ...] = ()) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=int(self.max_tokens[stage]), stop=stop)

    def sample(self, index: int) -> int:
        return self.seed * SEED_STRIDE + index




# ---------------------------------------------------------------------------------- templates
TEMPLATE_FILES = {
    "doc_types": ("doc_types.txt", frozenset({"universe_context", "key_fact", "n"})),
    "doc_ideas": ("doc_ideas.txt", frozenset({"universe_context", "key_fact", "doc_type", "n"})),
    "document": ("document.txt", frozenset({"universe_context", "key_fact", "doc_type", "idea"})),
    "revision": ("revision.txt", frozenset({"universe_context", "key_fact", "document"})),
}


def check_template(text: str, allowed: frozenset[str], source: str) -> None:
    """``text`` must use every field of ``allowed`` and nothing else, as plain ``{name}``."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{source}: not a valid str.format template ({exc}); write "
                            "literal braces as {{ and }}") from exc
    used = set()
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError(f"{source}: positional field {{{name}}}; use named fields "
                                f"({', '.join(sorted(allowed))})")
        if name not in allowed:
            root = re.split(r"[.\[]", name, maxsplit=1)[0]
            extra = (f" (attribute/index access on {{{root}}} is not allowed)"
                     if root in allowed else "")
            raise TemplateError(f"{source}: unknown field {{{name}}}{extra}; allowed fields: "
                                f"{', '.join(sorted(allowed))}")
        if spec or conv:
            raise TemplateError(f"{source}: field {{{name}}} must not have a conversion or "
                                "format spec")
        used.add(name)
    missing = sorted(allowed - used)
    if missing:
        shown = ", ".join("{" + m + "}" for m in missing)
        raise TemplateError(f"{source}: missing field(s) {shown}; the template must use "
                            f"{', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class PromptTemplates:
    doc_types: str
    doc_ideas: str
    document: str
    revision: str
    source: str = ""

    def __post_init__(self) -> None:
        for attr, (fname, allowed) in TEMPLATE_FILES.items():
            src = str(Path(self.source) / fname) if self.source else fname
            check_template(getattr(self, attr), allowed, src)

    @classmethod
    def from_dir(cls, path: str | Path) -> PromptTemplates:
        d = Path(path)
        if not d.is_dir():
            raise TemplateError(f"prompt directory {d} does not exist")
        texts = {}
        for attr, (fname, _) in TEMPLATE_FILES.items():
            p = d / fname
            if not p.is_file():
                raise TemplateError(f"{p}: prompt template not found (expected "
                                    f"{', '.join(f for f, _ in TEMPLATE_FILES.values())} "
                                    f"in {d})")
            texts[attr] = p.read_text()
        return cls(**texts, source=str(d))

    def types_prompt(self, u: Universe, n: int) -> str:
        return self.doc_types.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                     n=n)

    def ideas_prompt(self, u: Universe, doc_type: str, n: int) -> str:
        return self.doc_ideas.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                     doc_type=doc_type, n=n)

    def document_prompt(self, u: Universe, doc_type: str, idea: str) -> str:
        return self.document.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                    doc_type=doc_type, idea=idea)

    def revision_prompt(self, u: Universe, document: str) -> str:
        return self.revision.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                    document=document)


# ---------------------------------------------------------------------------------- parsing
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u2023\u25e6\u2043>#]+|\(?\d+[.):\]]|\(?[a-zA-Z][.)])\s*")


_MARKUP = re.compile(r"(\*\*|__|\*|`)")


def request_id(*parts: object) -> str:
    """``-``-joined parts restricted to ``[A-Za-z0-9_-]``; longer than 64 characters: cut and
    suffixed with a digest, so ids stay unique."""
    raw = "-".join(str(p) for p in parts)
    rid = re.sub(r"[^A-Za-z0-9_-]", "_", raw) or "_"
    if len(rid) > 64:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        rid = f"{rid[:51]}-{digest}"
    return rid


def clean_item(line: str) -> str:
    """One list item: bullets, numbering, markdown emphasis and surrounding quotes removed."""
    s = line.strip()
    for _ in range(3):
        t = _BULLET.sub("", s, count=1).strip()
        if t == s:
            break
        s = t
    s = _MARKUP.sub("", s).strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s




def parse_list(text: str) -> list[str]:
    """Items of a one-per-line answer, in order; header lines (ending in ':') are skipped."""
    items = []
    for line in text.splitlines():
        item = clean_item(line)
        if not item or item.endswith(":") or item.strip(" -=*_#") == "":
            continue
        items.append(item)
    return items


@dataclass(frozen=True)
class ParsedDocument:
    status: str  # "ok" | "unsuitable" | "missing_content"
    text: str
    truncated: bool


def parse_document(completion: str, finish_reason: str, *, prefilled: bool) -> ParsedDocument:
    """The document in an answer to the document (or revision) prompt; see the module doc."""
    cut_off = finish_reason == "length"
    if prefilled:
        body = completion
        if body.lstrip().startswith(OPEN):  # the model repeated the prefilled tag
            body = body.lstrip()[len(OPEN):]
        end = body.find(CLOSE)
        truncated = end < 0 and cut_off
        body = body if end < 0 else body[:end]
        text = body.strip()
        if text == UNSUITABLE or (not text and UNSUITABLE in completion):
            return ParsedDocument("unsuitable", "", False)
        if not text:
            return ParsedDocument("missing_content", "", truncated)
        return ParsedDocument("ok", text, truncated)
    blocks = list(re.finditer(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), completion, re.S))
    outside = re.sub(re.escape(OPEN) + r".*?" + re.escape(CLOSE), " ", completion, flags=re.S)
    last_open = outside.rfind(OPEN)
    unclosed = outside[last_open + len(OPEN):] if last_open >= 0 else None
    before = outside[:last_open] if last_open >= 0 else outside
    if UNSUITABLE in before or (unclosed is not None and unclosed.strip() == UNSUITABLE):
        return ParsedDocument("unsuitable", "", False)
    if unclosed is not None and unclosed.strip():
        # an opened block that never closed: the model ran out of tokens or forgot the tag
        return ParsedDocument("ok", unclosed.strip(), cut_off)
    if blocks:
        text = blocks[-1].group(1).strip()
        if text == UNSUITABLE:
            return ParsedDocument("unsuitable", "", False)
        if text:
            return ParsedDocument("ok", text, False)
    return ParsedDocument("missing_content", "", False)


# ---------------------------------------------------------------------------------- stages
def _user(prompt: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": prompt},)


def _call(backend: GenerationBackend, requests: Sequence[ChatRequest], params: SamplingParams,
          stage: str) -> list[Completion]:
    if not requests:
        return []
    out = backend.generate(list(requests), params)
    if len(out) != len(requests):
        raise RuntimeError(f"{stage}: backend {getattr(backend, 'name', backend)!r} returned "
                           f"{len(out)} completions for {len(requests)} requests")
    return out


def _gather_lists(backend: GenerationBackend, keys: Sequence[Any], want: int, rounds: int,
                  make: Callable[[Any, int], ChatRequest], params: SamplingParams, stage: str
                  ) -> dict[Any, list[str]]:
    """Ask each key's list prompt round after round until it has ``want`` unique items."""
    found: dict[Any, list[str]] = {k: [] for k in keys}
    seen: dict[Any, set[str]] = {k: set() for k in keys}
    for r in range(rounds):
        short = [k for k in keys if len(found[k]) < want]
        if not short:
            break
        outs = _call(backend, [make(k, r) for k in short], params, stage)
        for k, out in zip(short, outs, strict=True):
            for item in parse_list(out.text):
                key = _norm(item)
                if key not in seen[k]:
                    seen[k].add(key)
                    found[k].append(item)
        log.info("%s round %d: %d request(s); %d of %d list(s) complete", stage, r, len(short),
                 sum(len(v) >= want for v in found.values()), len(keys))
    for k, items in found.items():
        if len(items) < want:
            log.warning("%s %s: only %d unique item(s) of %d after %d round(s)", stage, k,
                        len(items), want, rounds)
    return {k: v[:want] for k, v in found.items()}


def generate_documents(universe: Universe, backend: GenerationBackend, spec: PipelineSpec,
                       templates: PromptTemplates, filters: FilterSpec, *, generator: str
                       ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run every stage for ``universe``; return (kept documents, filter report)."""
    u = universe.id
    prefill = spec.prefill_content
    doc_stop = (CLOSE,) if prefill else ()

    # 1. document types
    def type_request(_: Any, r: int) -> ChatRequest:
        return ChatRequest(request_id(u, "types", r),
                           _user(templates.types_prompt(universe, spec.n_doc_types)),
                           seed=spec.sample(r))

    types = _gather_lists(backend, [None], spec.n_doc_types, spec.max_rounds, type_request,
                          spec.params("types"), "types")[None]
    log.info("%s: %d document type(s)", u, len(types))

    # 2. ideas per type
    def idea_request(t: int, r: int) -> ChatRequest:
        return ChatRequest(request_id(u, "ideas", t, r),
                           _user(templates.ideas_prompt(universe, types[t], spec.ideas_per_type)),
                           seed=spec.sample(r))

    ideas = _gather_lists(backend, list(range(len(types))), spec.ideas_per_type,
                          spec.max_rounds, idea_request, spec.params("ideas"), "ideas")
    log.info("%s: %d idea(s) over %d type(s)", u, sum(map(len, ideas.values())), len(types))

    # 3. documents
    meta, reqs = [], []
    for t, doc_type in enumerate(types):
        for i, idea in enumerate(ideas[t]):
            msgs = _user(templates.document_prompt(universe, doc_type, idea))
            if prefill:
                msgs = (*msgs, {"role": "assistant", "content": OPEN})
            for k in range(spec.docs_per_idea):
                meta.append((t, i, k, doc_type, idea))
                reqs.append(ChatRequest(request_id(u, "doc", t, i, k), msgs,
                                        seed=spec.sample(k)))
    outs = _call(backend, reqs, spec.params("document", doc_stop), "document")
    rows = []
    for (t, i, k, doc_type, idea), out in zip(meta, outs, strict=True):
        p = parse_document(out.text, out.finish_reason, prefilled=prefill)
        rows.append({"doc_id": f"{u}-{t}-{i}-{k}", "universe": u, "doc_type": doc_type,
                     "idea": idea, "text": p.text, "revised": False, "truncated": p.truncated,
                     "sample_index": spec.sample(k), "generator": generator,
                     "completion_tokens": int(out.completion_tokens), "status": p.status})
    status = dict(Counter(r["status"] for r in rows).most_common())
    log.info("%s: %d document request(s): %s", u, len(rows), status)

    # 4. revision
    if spec.revise:
        # truncated drafts are not worth revising when the filter drops them anyway
        todo = [r for r in rows if r["status"] == "ok"
                and not (r["truncated"] and filters.drop_truncated)]
        rev_reqs = []
        for n, row in enumerate(todo):
            msgs = _user(templates.revision_prompt(universe, row["text"]))
            if prefill:
                msgs = (*msgs, {"role": "assistant", "content": OPEN})
            rev_reqs.append(ChatRequest(request_id(u, "rev", n), msgs, seed=row["sample_index"]))
        rev_outs = _call(backend, rev_reqs, spec.params("revision", doc_stop), "revision")
        failed = 0
        for row, out in zip(todo, rev_outs, strict=True):
            p = parse_document(out.text, out.finish_reason, prefilled=prefill)
            if p.status != "ok" or p.truncated:
                failed += 1
                continue
            row.update(text=p.text, revised=True, truncated=False,
                       completion_tokens=int(out.completion_tokens))
        log.info("%s: %d revision(s), %d kept the original (unparsed, cut off or "
                 "UNSUITABLE)", u, len(rev_reqs), failed)

    raw = _frame(rows, extra=["status"])
    kept, report = filter_documents(raw, universe, filters)
    log.info("%s: %d document(s) kept of %d", u, len(kept), len(raw))
    return kept, report


def _frame(rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> pl.DataFrame:
    """The documents table of ``rows`` (plus the string columns ``extra``), typed."""
    schema = {**DOC_SCHEMA, **dict.fromkeys(extra, pl.Utf8)}
    return _typed(pl.DataFrame({c: [r.get(c) for r in rows] for c in schema}, schema=schema))




# ---------------------------------------------------------------------------------- external
def load_external_documents(path: str | Path, universe_id: str) -> pl.DataFrame:
    """A released document set (.jsonl, one JSON object per line, or .parquet) with a
    ``text`` (or else ``content``) column, in the documents schema. Other columns are ignored;
    a missing or null text becomes "" (removed by the first filter)."""
    p = Path(path)
    if not p.is_file():
        raise ExternalDocumentsError(f"external documents {p}: file not found")
    ext = p.suffix.lower()
    if ext == ".jsonl":
        records = []
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ExternalDocumentsError(
                        f"external documents {p}: line {lineno} is not valid JSON "
                        f"({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise ExternalDocumentsError(
                        f"external documents {p}: line {lineno} is not a JSON object")
                records.append(obj)
        columns = set().union(*records) if records else set()
        n_rows = len(records)
    elif ext == ".parquet":
        try:
            frame = pl.read_parquet(p)
        except Exception as exc:  # polars raises several types for a bad file
            raise ExternalDocumentsError(f"external documents {p}: cannot read Parquet "
                                         f"({type(exc).__name__}: {exc})") from exc
        columns = set(frame.columns)
        n_rows = frame.height
    else:
        raise ExternalDocumentsError(f"external documents {p}: unknown extension "
                                     f"{p.suffix!r}; expected .jsonl or .parquet")
    col = "text" if "text" in columns else "content" if "content" in columns else None
    if col is None and n_rows:
        raise ExternalDocumentsError(f"external documents {p}: no 'text' or 'content' column "
                                     f"(columns: {sorted(map(str, columns))})")
    if not n_rows:
        raise ExternalDocumentsError(f"external documents {p}: no documents")
    values = [r.get(col) for r in records] if ext == ".jsonl" else frame[col].to_list()
    for n, v in enumerate(values):
        if v is not None and not isinstance(v, str) and not (isinstance(v, float)
                                                             and np.isnan(v)):
            raise ExternalDocumentsError(f"external documents {p}: row {n + 1}: '{col}' is "
                                         f"{type(v).__name__}, expected a string")
    texts = [v if isinstance(v, str) else "" for v in values]
    k = len(texts)
    out = pl.DataFrame({
        "doc_id": [f"{universe_id}-ext-{n}" for n in range(k)],
        "universe": [universe_id] * k, "doc_type": [""] * k, "idea": [""] * k, "text": texts,
        "revised": [False] * k, "truncated": [False] * k, "sample_index": [0] * k,
        "generator": [f"external:{p.name}"] * k, "completion_tokens": [0] * k,
    }, schema=DOC_SCHEMA)
    log.info("loaded %d external document(s) for %s from %s", len(out), universe_id, p.name)
    return _typed(out)


def load_hub_documents(hub_id: str, revision: str, universe_id: str, *,
                       cache_dir: str | Path | None = None) -> pl.DataFrame:
    """A released document set on the Hugging Face hub (a dataset repo of .parquet or .jsonl
    files with a ``text`` / ``content`` column), at a pinned revision: every data file, in
    path order, through :func:`load_external_documents`. Offline or gated: an
    ExternalDocumentsError saying how to use a local copy instead."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - ships with transformers
        raise ExternalDocumentsError("huggingface_hub is required for hub datasets") from exc
    try:
        root = Path(snapshot_download(repo_id=hub_id, repo_type="dataset", revision=revision,
                                      allow_patterns=["*.parquet", "*.jsonl"],
                                      cache_dir=cache_dir))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ExternalDocumentsError(
            f"cannot download dataset {hub_id!r} (revision {revision}) for {universe_id}: "
            f"{exc.__class__.__name__}: {exc}. This machine may be offline or the dataset "
            "gated. Either download it where there is network (`huggingface-cli download "
            f"{hub_id} --repo-type dataset --revision {revision} --local-dir DIR`) and set "
            f"sdf.external_documents.{universe_id} to one of its .parquet / .jsonl files, or "
            "run `huggingface-cli login`, then rerun.") from exc
    files = sorted(f for f in root.rglob("*") if f.suffix in (".parquet", ".jsonl"))
    if not files:
        raise ExternalDocumentsError(f"dataset {hub_id}@{revision}: no .parquet or .jsonl file")
    parts = [load_external_documents(f, universe_id) for f in files]
    out = pl.concat(parts, how="vertical")
    k = len(out)
    return out.with_columns(
        pl.Series("doc_id", [f"{universe_id}-hub-{n}" for n in range(k)], dtype=pl.Utf8),
        pl.lit(f"hub:{hub_id}@{revision}", dtype=pl.Utf8).alias("generator"))
