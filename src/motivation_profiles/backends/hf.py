"""The transformers generation backend: CPU or GPU, LoRA via peft, steering hooks, and the
keys and values of prompts already computed in this process reused (``kv_reuse``: the shared
system prompt once for a whole call, and each row's transcript from one turn to the next).

Sampling gives every request its own random stream (``base.stream_seed``): ``GumbelSampler``
draws, per row and per step, Gumbel noise from that row's own ``torch.Generator`` and
``generate`` takes the argmax (``do_sample=False``), so a request's sample does not depend on
the requests it is batched with. Each request also gets its own new-token budget
(``max_model_len`` minus its own prompt), not the batch's."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    PromptTooLongError,
    SamplingParams,
    check_prompts_fit,
    continuation_tokens,
    cut_at_stop,
    longest_common_prefix,
    stream_seed,
)
from motivation_profiles.backends.kv_reuse import (
    KVStore,
    Run,
    batch_cache,
    load_prefix,
    prefix_key,
    row_run,
    save_prefix,
    supported,
)

log = logging.getLogger(__name__)


class GumbelSampler:
    """A transformers logits processor that samples with one random stream per row.

    Per row and step: logits / temperature, then top-p (the smallest set of tokens whose
    probability reaches ``top_p``; the rest get -inf), then Gumbel noise drawn from the row's
    own ``torch.Generator``. ``generate(do_sample=False)`` takes the argmax, and
    argmax(logits / T + G) with G i.i.d. standard Gumbel is an exact sample from
    softmax(logits / T) (restricted to the top-p set). Every row draws one vocabulary-sized
    vector per step whether or not it has finished, so the k-th token of a row uses the k-th
    draw of its stream, whatever the other rows do.

    A request's tokens are then the same in any batching as far as its logits are: batching
    and padding change a row's float32 logits in the last bits only (on CPU, at most ~2e-7 on
    the tests' tiny model), and that flips a token only when the two best perturbed scores are
    that close, about once in millions of tokens. On a GPU in bf16, batch-size-dependent kernels
    move logits more, so long sampled transcripts can still diverge between batchings there,
    as they can in vLLM.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any):
        import torch

        if temperature <= 0:
            raise ValueError(f"GumbelSampler needs temperature > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s))
                           for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"GumbelSampler has {len(self.generators)} streams for a batch "
                             f"of {scores.shape[0]} rows")
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = _top_p(scores, self.top_p)
        tiny = torch.finfo(torch.float32).tiny
        noise = torch.stack([
            torch.rand(scores.shape[-1], generator=g, device=self.device,
                       dtype=torch.float32).clamp_(min=tiny)
            for g in self.generators])
        return scores - torch.log(-torch.log(noise))


def _top_p(scores: Any, top_p: float) -> Any:
    """Nucleus filtering as transformers' ``TopPLogitsWarper`` (keeps at least one token)."""
    import torch

    ascending, idx = torch.sort(scores, dim=-1, stable=True)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - top_p)
    drop[..., -1] = False
    return scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))


@dataclass
class HFBackend:
    """transformers generation with shared-prefix KV reuse.

    ``reuse_prefix=False`` prefills every request's full prompt (the baseline the bench
    compares against); outputs are the same either way up to floating-point effects.
    """

    model: Any
    tokenizer: Any
    batch_size: int = 8
    max_model_len: int = 4096
    reuse_prefix: bool = True
    min_prefix_tokens: int = 16
    show_progress: bool = True
    name: str = "hf"
    steering: Any = None  # steering.Steering: added to decoder-layer outputs while generating
    kv_reuse_bytes: int = 2 * 2**30  # keys/values kept for later calls (kv_reuse)
    # Shared prefixes (a system prompt, the judge's rubric) kept on disk for later jobs:
    # the folder, and the identity of the weights and adapter that is part of each file's key
    prefix_dir: str | None = None
    weights_id: str | None = None
    _store: KVStore | None = field(default=None, repr=False)
    _supported: bool | None = field(default=None, repr=False)
    # prompt tokens whose keys and values came from the store / were computed / were read
    # from prefix_dir, over all calls
    kv_stats: dict[str, int] = field(
        default_factory=lambda: {"reused": 0, "computed": 0, "loaded": 0})

    def __post_init__(self) -> None:
        if self._store is None:
            self._store = KVStore(self.kv_reuse_bytes if self.reuse_prefix else 0)

    @classmethod
    def from_pretrained(cls, model_dir, *, dtype="float32", device="cpu", adapter=None,
                        merge_adapter=False, **kwargs) -> HFBackend:
        from motivation_profiles.models.load import load_model

        model, tok = load_model(model_dir, dtype=dtype, device=device, adapter=adapter,
                                merge_adapter=merge_adapter)
        return cls(model=model, tokenizer=tok, **kwargs)

    # ------------------------------------------------------------------ helpers
    def encode(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of the conversation, ready for the next assistant turn. A trailing
        assistant message is a prefill: the model continues it (its text is not repeated in
        the completion)."""
        msgs = [dict(m) for m in messages]
        prefill = bool(msgs) and msgs[-1].get("role") == "assistant"
        text = self.tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=not prefill,
            continue_final_message=prefill,
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        out = {i for i in ids if i is not None}
        if self.tokenizer.eos_token_id is not None:
            out.add(self.tokenizer.eos_token_id)
        return out

    def _ident(self) -> Any:
        # Keys and values computed under one steering are wrong under another.
        return self.steering.identity if self.steering is not None else None

    def _steered(self):
        from motivation_profiles.models.hooks import steer

        return steer(self.model, self.steering)

    def _share_prefix(self, all_ids: Sequence[Sequence[int]]) -> int:
        """The tokens every prompt of a call starts with (each keeps >= 1 of its own), computed
        once into the store when no stored run covers them yet; 0 for a single prompt, below
        ``min_prefix_tokens`` or with reuse off."""
        if not self._reusable() or len(all_ids) < 2:   # one row: nothing to share
            return 0
        lcp = min(longest_common_prefix(all_ids), min(len(s) for s in all_ids) - 1)
        if lcp < self.min_prefix_tokens:
            return 0
        prefix = list(all_ids[0][:lcp])
        if self._store.covers(self._ident(), prefix):
            return lcp
        path = self._prefix_path(prefix)
        layers = load_prefix(path, lcp, self.model.device) if path else None
        if layers is None:
            import torch
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode(), self._steered():
                # only the keys and values are kept: one logit row instead of a vocabulary-wide
                # row per prefix token (the lm head is a fifth of a small model's forward)
                self.model(input_ids=torch.tensor([prefix], device=self.model.device),
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            self.kv_stats["computed"] += len(prefix)
            layers = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
            if path:
                save_prefix(path, layers)
        else:
            self.kv_stats["loaded"] += len(prefix)
            log.info("shared prefix of %d tokens read from %s", len(prefix), path)
        self._store.put(self._ident(), prefix, layers, force=True)
        return lcp

    def _prefix_path(self, prefix: Sequence[int]) -> str | None:
        """Where the shared ``prefix``'s keys and values are kept across jobs (None: not kept,
        or the weights' identity is unknown)."""
        if not self.prefix_dir or not self.weights_id:
            return None
        import os

        key = prefix_key(weights=self.weights_id, steering=self._ident(),
                         dtype=str(self.model.dtype), device=self.model.device.type,
                         tokens=prefix)
        return os.path.join(self.prefix_dir, f"{key}.safetensors")

    def _reusable(self) -> bool:
        """Reuse is on and the model's cache layers can be cut into rows and stacked (a model
        with sliding-window layers prefills every prompt in full)."""
        if not self.reuse_prefix:
            return False
        if self._supported is None:
            from transformers import DynamicCache

            self._supported = supported(DynamicCache(config=self.model.config))
            if not self._supported:
                log.info("kv reuse off: %s's cache layers are not all plain dynamic layers",
                         type(self.model).__name__)
        return self._supported

    def _log_reuse(self, what: str, rows: int, before: Mapping[str, int]) -> None:
        reused = self.kv_stats["reused"] - before["reused"]
        computed = self.kv_stats["computed"] - before["computed"]
        log.info("%s: %d row(s); prompt tokens: %d computed, %d reused (%d runs, %.0f MB "
                 "kept)", what, rows, computed, reused, len(self._store),
                 self._store.nbytes / 2**20)

    def _reuse(self, ids: Sequence[Sequence[int]]) -> list[tuple[int, Run | None]]:
        """Per row, the stored run its ids start with (tokens shared, run)."""
        rows = ([self._store.match(self._ident(), s) for s in ids] if self._reusable()
                else [(0, None)] * len(ids))
        reused = sum(n for n, _ in rows)
        self.kv_stats["reused"] += reused
        self.kv_stats["computed"] += sum(len(s) for s in ids) - reused
        return rows

    def _keep(self, cache: Any, row: int, positions: Sequence[int], tokens: Sequence[int]
              ) -> None:
        """Store row ``row``'s keys and values of ``tokens`` (at ``positions`` of ``cache``)."""
        if self._reusable() and tokens:
            self._store.put(self._ident(), tokens, row_run(cache, row, positions, tokens).layers)

    @staticmethod
    def _layout(ids: Sequence[Sequence[int]], reused: Sequence[int], pad: int
                ) -> tuple[list[list[int]], list[list[int]], int, int]:
        """Input ids and attention mask of a batch whose row ``i`` reuses its first
        ``reused[i]`` tokens: ``[pad] * (C - c) + reused + [pad] * (W - n) + new``, with C the
        longest reused run and W the longest new part; returns (ids, mask, C, W)."""
        width_c = max(reused)
        width_w = max(len(s) - c for s, c in zip(ids, reused, strict=True))
        rows, mask = [], []
        for s, c in zip(ids, reused, strict=True):
            n = len(s) - c
            rows.append([pad] * (width_c - c) + list(s[:c]) + [pad] * (width_w - n) + list(s[c:]))
            mask.append([0] * (width_c - c) + [1] * c + [0] * (width_w - n) + [1] * n)
        return rows, mask, width_c, width_w

    @staticmethod
    def _positions(length: int, reused: int, width_c: int, width_w: int) -> list[int]:
        """Cache positions of a row's prompt tokens in ``_layout``'s layout."""
        new = length - reused
        return [*range(width_c - reused, width_c), *range(width_c + width_w - new,
                                                          width_c + width_w)]

    # ------------------------------------------------------------------ generate
    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams
                 ) -> list[Completion]:
        """One completion per request, in request order. Raises ``PromptTooLongError`` before
        generating anything when a prompt leaves no room for the smallest useful answer."""
        all_ids = [self.encode(r.messages) for r in requests]
        check_prompts_fit(requests, [len(ids) for ids in all_ids], params, self.max_model_len)
        results: dict[int, Completion] = {}
        runnable = []
        for i, (req, ids) in enumerate(zip(requests, all_ids, strict=True)):
            if len(ids) >= self.max_model_len:  # prompt_overflow="length": nothing fits
                log.warning("request %s: prompt of %d tokens fills the %d-token context",
                            req.request_id, len(ids), self.max_model_len)
                results[i] = Completion(req.request_id, "", "length", len(ids), 0)
            else:
                runnable.append(i)
        before = dict(self.kv_stats)
        p = self._share_prefix([all_ids[i] for i in runnable])
        # Longest prompts first: batches of similar length waste less padding.
        order = sorted(runnable, key=lambda i: (-len(all_ids[i]), i))
        batches = [order[k: k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=f"generate (shared prefix {p} tok)", unit="batch",
                          disable=not self.show_progress, mininterval=5):
            outs = self._generate_batch([requests[i] for i in batch],
                                        [all_ids[i] for i in batch], params)
            results.update(zip(batch, outs, strict=True))
        self._log_reuse("generate", len(runnable), before)
        return [results[i] for i in range(len(requests))]

    # ------------------------------------------------------------------ scoring
    def continuation_logprobs(self, requests: Sequence[ChatRequest], candidates: Sequence[str]
                              ) -> list[list[float] | None]:
        """Per request, the log-probability (temperature 1) of each candidate's full token
        sequence continuing the request's trailing assistant message
        (``base.continuation_tokens``), in candidate order. A request whose longest scored
        sequence does not fit ``max_model_len`` raises ``PromptTooLongError`` before anything is
        computed (``prompt_overflow="raise"``) or gets None (``"length"``).

        Each request's context is computed once (after the tokens it shares with stored runs,
        reused as in ``generate``, and kept for later calls), then every candidate's remaining
        tokens in one pass over that context (``_tails_packed``); steered like ``generate``."""
        out: list[list[float] | None] = [None] * len(requests)
        items: list[tuple[int, list[int], list[list[int]]]] = []
        for i, req in enumerate(requests):
            ctx, tails = continuation_tokens(self.encode, req.messages, candidates)
            longest = max(len(t) for t in tails)
            if len(ctx) + longest > self.max_model_len:
                if req.prompt_overflow == "raise":
                    raise PromptTooLongError(req.request_id, len(ctx), longest,
                                             self.max_model_len)
                log.warning("request %s: %d context tokens leave no room to score the "
                            "candidates in the %d-token context", req.request_id, len(ctx),
                            self.max_model_len)
                continue
            items.append((i, ctx, tails))
        if not items:
            return out
        # every context keeps >= 1 token after the prefix: its last logit scores the first
        # candidate token
        before = dict(self.kv_stats)
        p = self._share_prefix([ctx for _, ctx, _ in items])
        order = sorted(range(len(items)), key=lambda k: (-len(items[k][1]), k))
        batches = [order[k: k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=f"score (shared prefix {p} tok)", unit="batch",
                          disable=not self.show_progress, mininterval=5):
            sums = self._score_batch([items[k][1] for k in batch], [items[k][2] for k in batch])
            for k, values in zip(batch, sums, strict=True):
                out[items[k][0]] = values
        self._log_reuse("score", len(items), before)
        return out

    def _score_batch(self, ctxs: Sequence[Sequence[int]], tails: Sequence[Sequence[list[int]]]
                     ) -> list[list[float]]:
        """Per context, the summed log-probs of each of its candidate token sequences. Pass 1:
        the contexts (each after the run of its tokens reused from the store, ``_layout``),
        whose last logits score every candidate's first token, and whose keys and values are
        kept; pass 2: the candidates' other tokens (``_tails_packed``, or ``_tails_repeated``
        where the attention implementation takes no 4-D mask)."""
        import torch
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        device = self.model.device
        reuse = self._reuse(ctxs)
        rows, mask, width_c, width_w = self._layout(ctxs, [n for n, _ in reuse], pad)
        mask = torch.tensor(mask, device=device)
        cache = (batch_cache(reuse, width_c, self.model.config) if width_c
                 else DynamicCache(config=self.model.config))
        with torch.inference_mode(), self._steered():
            first = self.model(
                input_ids=torch.tensor([r[width_c:] for r in rows], device=device),
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, width_c:],
                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            first = torch.log_softmax(first.float(), dim=-1)
            for r, ((n, _), ctx) in enumerate(zip(reuse, ctxs, strict=True)):
                self._keep(cache, r, self._positions(len(ctx), n, width_c, width_w), ctx)
            packed = self.model.config._attn_implementation in ("sdpa", "eager")
            later = (self._tails_packed if packed else self._tails_repeated)(
                cache, mask, ctxs, tails, pad)
        return [[float(first[r, t[0]]) + later[r][j] for j, t in enumerate(ts)]
                for r, ts in enumerate(tails)]

    def _tails_packed(self, cache: Any, mask: Any, ctxs: Sequence[Sequence[int]],
                      tails: Sequence[Sequence[list[int]]], pad: int) -> list[list[float]]:
        """Per context and candidate, the summed log-probs of the candidate's tokens after its
        first, in one forward pass over the contexts' cache (not repeated per candidate): each
        row holds all its candidates' tokens one after another, and a 4-D attention mask lets
        each candidate see the context and its own earlier tokens only, at the positions it
        would have right after the context."""
        import torch

        device, n_rows = mask.device, len(ctxs)
        feeds: list[list[int]] = []
        spans: list[list[tuple[int, int]]] = []
        for ts in tails:
            row: list[int] = []
            spans.append([])
            for t in ts:
                spans[-1].append((len(row), len(t) - 1))
                row.extend(t[:-1])
            feeds.append(row)
        width = max(len(f) for f in feeds)
        if width == 0:
            return [[0.0] * len(ts) for ts in tails]
        past = mask.shape[1]
        allow = torch.zeros(n_rows, 1, width, past + width, dtype=torch.bool, device=device)
        allow[:, 0, :, :past] = mask.bool()[:, None, :]
        positions = torch.zeros(n_rows, width, dtype=torch.long, device=device)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        for r, row_spans in enumerate(spans):
            for start, n in row_spans:
                allow[r, 0, start: start + n, past + start: past + start + n] = \
                    causal[:n, :n]
                positions[r, start: start + n] = len(ctxs[r]) + torch.arange(n, device=device)
            for q in range(len(feeds[r]), width):   # padding: sees itself only, never read
                allow[r, 0, q] = False
                allow[r, 0, q, past + q] = True
        dtype = self.model.dtype
        bias = torch.zeros(allow.shape, dtype=dtype, device=device).masked_fill_(
            ~allow, torch.finfo(dtype).min)
        logits = self.model(
            input_ids=torch.tensor([f + [pad] * (width - len(f)) for f in feeds], device=device),
            attention_mask=bias, position_ids=positions, past_key_values=cache,
            use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for r, (ts, row_spans) in enumerate(zip(tails, spans, strict=True)):
            out.append([float(logp[r, torch.arange(start, start + n, device=device),
                                   torch.tensor(t[1:], device=device)].sum()) if n else 0.0
                        for t, (start, n) in zip(ts, row_spans, strict=True)])
        return out

    def _tails_repeated(self, cache: Any, mask: Any, ctxs: Sequence[Sequence[int]],
                        tails: Sequence[Sequence[list[int]]], pad: int) -> list[list[float]]:
        """``_tails_packed`` for attention implementations without custom 4-D masks: the
        contexts' cache repeated per candidate, the candidates' tokens right-padded (padding
        after them changes nothing)."""
        import torch

        device, n_rows, n_cand = mask.device, len(ctxs), len(tails[0])
        rest = max(len(t) for ts in tails for t in ts) - 1
        if rest <= 0:
            return [[0.0] * len(ts) for ts in tails]
        cache.batch_repeat_interleave(n_cand)   # row r * n_cand + j: candidate j
        ids = [list(t[:-1]) + [pad] * (rest - len(t) + 1) for ts in tails for t in ts]
        lengths = torch.tensor([len(c) for c in ctxs for _ in range(n_cand)], device=device)
        later = self.model(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=torch.cat([mask.repeat_interleave(n_cand, dim=0),
                                      mask.new_ones(n_rows * n_cand, rest)], dim=1),
            position_ids=lengths[:, None] + torch.arange(rest, device=device),
            past_key_values=cache, use_cache=True).logits
        later = torch.log_softmax(later.float(), dim=-1)
        return [[float(later[r * n_cand + j, torch.arange(len(t) - 1, device=device),
                             torch.tensor(t[1:], device=device)].sum()) if len(t) > 1 else 0.0
                 for j, t in enumerate(ts)] for r, ts in enumerate(tails)]

    def _generate_batch(self, reqs: Sequence[ChatRequest], ids: Sequence[Sequence[int]],
                        params: SamplingParams) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        pad = self.tokenizer.pad_token_id
        reuse = self._reuse(ids)
        rows, mask, width_c, width_w = self._layout(ids, [n for n, _ in reuse], pad)
        # Each row's own budget, as if generated alone; the batch runs to the largest, and a
        # row's tokens past its own budget are dropped below.
        budgets = [min(params.max_new_tokens, self.max_model_len - len(s)) for s in ids]
        device = self.model.device
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor(rows, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "max_new_tokens": max(budgets),
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos_ids),
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
            "return_dict_in_generate": True,
        }
        if params.temperature > 0:
            sampler = GumbelSampler([stream_seed(r) for r in reqs], params.temperature,
                                    params.top_p, device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if width_c:
            kwargs["past_key_values"] = batch_cache(reuse, width_c, self.model.config)
        with torch.inference_mode(), self._steered():
            out = self.model.generate(**kwargs)
        start = width_c + width_w
        new = out.sequences[:, start:].tolist()
        cached = out.past_key_values.get_seq_length() if out.past_key_values is not None else 0
        completions = []
        for r, (req, prompt, toks, budget, (n, _)) in enumerate(
                zip(reqs, ids, new, budgets, reuse, strict=True)):
            completion, kept = self._completion(req, len(prompt), toks[:budget], params)
            completions.append(completion)
            # the row's prompt and generated tokens whose keys and values were computed (the
            # last sampled token never went through the model)
            g = max(0, min(len(kept), cached - start))
            self._keep(out.past_key_values, r,
                       [*self._positions(len(prompt), n, width_c, width_w),
                        *range(start, start + g)], [*prompt, *kept[:g]])
        return completions

    def _completion(self, req: ChatRequest, prompt_tokens: int, toks: list[int],
                    params: SamplingParams) -> tuple[Completion, list[int]]:
        """The row's completion, and the tokens it kept (cut at its end of sequence, with the
        padding after a stop string dropped)."""
        eos = self.eos_ids
        stop_at = next((k for k, t in enumerate(toks) if t in eos), None)
        toks = toks if stop_at is None else toks[:stop_at]
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        if hit and stop_at is None:
            # a row stopped by a stop string is padded until the batch ends: not its tokens
            pad = self.tokenizer.pad_token_id
            while toks and toks[-1] == pad:
                toks = toks[:-1]
        finish = "stop" if (stop_at is not None or hit) else "length"
        return Completion(req.request_id, text, finish, prompt_tokens, len(toks)), toks
