"""The transformers generation backend: CPU or GPU, LoRA via peft, steering hooks, and the
shared system prompt's KV cache computed once and reused."""

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
    SamplingParams,
    batch_seed,
    cut_at_stop,
    longest_common_prefix,
)

log = logging.getLogger(__name__)


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
            self.model(input_ids=ids, past_key_values=cache, use_cache=True)
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
        all_ids = [self.encode(r.messages) for r in requests]
        results: dict[int, Completion] = {}
        runnable = []
        for i, (req, ids) in enumerate(zip(requests, all_ids, strict=True)):
            if len(ids) >= self.max_model_len:
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

    def _generate_batch(self, reqs: Sequence[ChatRequest], ids: Sequence[Sequence[int]],
                        p: int, params: SamplingParams) -> list[Completion]:
        import torch

        pad = self.tokenizer.pad_token_id
        suffixes = [list(s[p:]) for s in ids]
        width = max(len(s) for s in suffixes)
        prefix = list(ids[0][:p])
        input_ids = [prefix + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * p + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        max_new = min(params.max_new_tokens, self.max_model_len - (p + width))
        device = self.model.device
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor(input_ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "max_new_tokens": max_new,
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos_ids),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if p:
            cache = copy.deepcopy(self._prefix_cache(prefix))
            cache.batch_repeat_interleave(len(reqs))
            kwargs["past_key_values"] = cache
        torch.manual_seed(batch_seed(reqs))
        with torch.inference_mode(), self._steered():
            out = self.model.generate(**kwargs)
        new = out[:, p + width:].tolist()
        eos = self.eos_ids
        completions = []
        for req, prompt, toks in zip(reqs, ids, new, strict=True):
            stop_at = next((k for k, t in enumerate(toks) if t in eos), None)
            toks = toks if stop_at is None else toks[:stop_at]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            text, hit = cut_at_stop(text, params.stop)
            finish = "stop" if (stop_at is not None or hit) else "length"
            completions.append(Completion(req.request_id, text, finish, len(prompt), len(toks)))
        return completions
