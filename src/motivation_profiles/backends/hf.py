"""The transformers generation backend: CPU or GPU, LoRA via peft, steering hooks, and the
shared system prompt's KV cache computed once and reused.

Sampling gives every request its own random stream (``base.stream_seed``): ``GumbelSampler``
draws, per row and per step, Gumbel noise from that row's own ``torch.Generator`` and
``generate`` takes the argmax (``do_sample=False``), so a request's sample does not depend on
the requests it is batched with. Each request also gets its own new-token budget
(``max_model_len`` minus its own prompt), not the batch's."""

from __future__ import annotations

import copy
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
    _prefix: tuple[tuple[Any, ...], Any] | None = field(default=None, repr=False)

    @classmethod
    def from_pretrained(cls, model_dir, *, dtype="float32", device="cpu", adapter=None,
                        **kwargs) -> HFBackend:
        from motivation_profiles.models.load import load_model

        model, tok = load_model(model_dir, dtype=dtype, device=device, adapter=adapter)
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

    def _prefix_cache(self, prefix: Sequence[int]):
        """KV cache of ``prefix``, computed once and kept while later calls share it."""
        import torch
        from transformers import DynamicCache

        key = self._cache_key(prefix)
        if self._prefix is not None and self._prefix[0] == key:
            return self._prefix[1]
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode(), self._steered():
            ids = torch.tensor([list(prefix)], device=self.model.device)
            # only the KV cache is kept: one logit row instead of a vocabulary-wide row per
            # prefix token (the lm head is a fifth of a small model's forward)
            self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self._prefix = (key, cache)
        return cache

    def _cache_key(self, prefix: Sequence[int]) -> tuple[Any, ...]:
        # A prefix cache computed under one steering is wrong under another.
        ident = self.steering.identity if self.steering is not None else None
        return (ident, *prefix)

    def _steered(self):
        from motivation_profiles.models.hooks import steer

        return steer(self.model, self.steering)

    def _choose_prefix(self, all_ids: Sequence[Sequence[int]]) -> int:
        if not self.reuse_prefix or not all_ids:
            return 0
        lcp = longest_common_prefix(all_ids)
        lcp = min(lcp, min(len(s) for s in all_ids) - 1)  # every row keeps >= 1 new token
        if self._prefix is not None:
            cached = self._prefix[0]
            n = len(cached) - 1
            if n <= lcp and cached == self._cache_key(all_ids[0][:n]):
                return n  # reuse the cache already computed by an earlier call
        return lcp if lcp >= self.min_prefix_tokens else 0

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
        p = self._choose_prefix([all_ids[i] for i in runnable])
        # Longest prompts first: batches of similar length waste less padding.
        order = sorted(runnable, key=lambda i: (-len(all_ids[i]), i))
        batches = [order[k: k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=f"generate (prefix {p} tok)", unit="batch",
                          disable=not self.show_progress, mininterval=5):
            outs = self._generate_batch([requests[i] for i in batch],
                                        [all_ids[i] for i in batch], p, params)
            results.update(zip(batch, outs, strict=True))
        return [results[i] for i in range(len(requests))]

    # ------------------------------------------------------------------ scoring
    def continuation_logprobs(self, requests: Sequence[ChatRequest], candidates: Sequence[str]
                              ) -> list[list[float] | None]:
        """Per request, the log-probability (temperature 1) of each candidate's full token
        sequence continuing the request's trailing assistant message
        (``base.continuation_tokens``), in candidate order. A request whose longest scored
        sequence does not fit ``max_model_len`` raises ``PromptTooLongError`` before anything is
        computed (``prompt_overflow="raise"``) or gets None (``"length"``).

        Each request's context is computed once (after the shared prompt prefix's KV cache,
        reused as in ``generate``), then its KV cache is repeated for the candidates' tokens;
        steered like ``generate``."""
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
        p = self._choose_prefix([ctx for _, ctx, _ in items])
        order = sorted(range(len(items)), key=lambda k: (-len(items[k][1]), k))
        batches = [order[k: k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=f"score (prefix {p} tok)", unit="batch",
                          disable=not self.show_progress, mininterval=5):
            sums = self._score_batch([items[k][1] for k in batch], [items[k][2] for k in batch],
                                     p)
            for k, values in zip(batch, sums, strict=True):
                out[items[k][0]] = values
        return out

    def _score_batch(self, ctxs: Sequence[Sequence[int]], tails: Sequence[Sequence[list[int]]],
                     p: int) -> list[list[float]]:
        """Per context, the summed log-probs of each of its candidate token sequences. Pass 1:
        the contexts (left-padded after the ``p`` cached prefix tokens), whose last logits score
        every candidate's first token; pass 2: the KV cache repeated per candidate and the
        candidates' other tokens (right-padded: padding after them changes nothing)."""
        import torch
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        device = self.model.device
        n_rows, n_cand = len(ctxs), len(tails[0])
        suffixes = [list(c[p:]) for c in ctxs]
        width = max(len(s) for s in suffixes)
        mask = torch.tensor([[1] * p + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
                            device=device)
        if p:
            cache = copy.deepcopy(self._prefix_cache(list(ctxs[0][:p])))
            cache.batch_repeat_interleave(n_rows)
        else:
            cache = DynamicCache(config=self.model.config)
        with torch.inference_mode(), self._steered():
            first = self.model(
                input_ids=torch.tensor([[pad] * (width - len(s)) + s for s in suffixes],
                                       device=device),
                attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, p:],
                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            first = torch.log_softmax(first.float(), dim=-1)
            rest = max(len(t) for ts in tails for t in ts) - 1
            later = None
            if rest > 0:
                cache.batch_repeat_interleave(n_cand)   # row r * n_cand + j: candidate j
                ids = [list(t[:-1]) + [pad] * (rest - len(t) + 1) for ts in tails for t in ts]
                lengths = torch.tensor([len(c) for c in ctxs for _ in range(n_cand)],
                                       device=device)
                later = self.model(
                    input_ids=torch.tensor(ids, device=device),
                    attention_mask=torch.cat([mask.repeat_interleave(n_cand, dim=0),
                                              mask.new_ones(n_rows * n_cand, rest)], dim=1),
                    position_ids=lengths[:, None] + torch.arange(rest, device=device),
                    past_key_values=cache, use_cache=True).logits
                later = torch.log_softmax(later.float(), dim=-1)
        out = []
        for r, ts in enumerate(tails):
            values = []
            for j, t in enumerate(ts):
                v = first[r, t[0]]
                if len(t) > 1:
                    v = v + later[r * n_cand + j,
                                  torch.arange(len(t) - 1, device=later.device),
                                  torch.tensor(t[1:], device=later.device)].sum()
                values.append(float(v))
            out.append(values)
        return out

    def _generate_batch(self, reqs: Sequence[ChatRequest], ids: Sequence[Sequence[int]],
                        p: int, params: SamplingParams) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        pad = self.tokenizer.pad_token_id
        suffixes = [list(s[p:]) for s in ids]
        width = max(len(s) for s in suffixes)
        prefix = list(ids[0][:p])
        input_ids = [prefix + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * p + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        # Each row's own budget, as if generated alone; the batch runs to the largest, and a
        # row's tokens past its own budget are dropped below.
        budgets = [min(params.max_new_tokens, self.max_model_len - len(s)) for s in ids]
        device = self.model.device
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor(input_ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "max_new_tokens": max(budgets),
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos_ids),
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
        }
        if params.temperature > 0:
            sampler = GumbelSampler([stream_seed(r) for r in reqs], params.temperature,
                                    params.top_p, device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if p:
            cache = copy.deepcopy(self._prefix_cache(prefix))
            cache.batch_repeat_interleave(len(reqs))
            kwargs["past_key_values"] = cache
        with torch.inference_mode(), self._steered():
            out = self.model.generate(**kwargs)
        new = out[:, p + width:].tolist()
        return [self._completion(req, len(prompt), toks[:budget], params)
                for req, prompt, toks, budget in zip(reqs, ids, new, budgets, strict=True)]

    def _completion(self, req: ChatRequest, prompt_tokens: int, toks: list[int],
                    params: SamplingParams) -> Completion:
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
        return Completion(req.request_id, text, finish, prompt_tokens, len(toks))
