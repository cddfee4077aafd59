"""Per-request random streams: a sampled request's completion is a function of the request
(messages and seed) alone, not of the batch it lands in, its position, the other requests of
the call, the prefix cache, the response cache's state or its request id.

All on the tiny random Llama at temperature 1, where nearly every token of the vocabulary is
plausible, so any change of random stream changes the text. A random subset of the vocabulary
counts as end of sequence, so rows of one batch finish at different steps and keep drawing from
their streams while others go on."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from motivation_profiles.backends.base import ChatRequest, SamplingParams, stream_seed
from motivation_profiles.backends.cache import CachedBackend
from motivation_profiles.backends.hf import GumbelSampler, HFBackend

SYSTEM = "You are a test assistant. " * 12
OTHER_SYSTEM = "Answer briefly. " * 3
USERS = ["hi", "write a long poem about the sea and the sky", "ok",
         "tell me three things about rivers", "bye now"]
SAMPLED = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)


class EarlyStops(HFBackend):
    """One token in 12 of the vocabulary ends a sequence, so rows stop at different steps."""

    @property
    def eos_ids(self):
        return {t for t in range(self.model.config.vocab_size) if t % 12 == 5}


def _conv(system: str, user: str) -> tuple[dict[str, str], ...]:
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def _requests(prefix: str = "r", system: str = SYSTEM, seed: int = 0) -> list[ChatRequest]:
    return [ChatRequest(f"{prefix}{i}", _conv(system, u), seed + i % 2)
            for i, u in enumerate(USERS)]


def _backend(tiny_model, **kw) -> EarlyStops:
    model, tok = tiny_model
    return EarlyStops(model=model, tokenizer=tok, show_progress=False, **kw)


def _by_id(backend: HFBackend, reqs, params=SAMPLED) -> dict[str, tuple[str, str, int]]:
    return {c.request_id: (c.text, c.finish_reason, c.completion_tokens)
            for c in backend.generate(reqs, params)}


@pytest.fixture(scope="module")
def alone(tiny_model) -> dict[str, tuple[str, str, int]]:
    """Each request generated on its own, full prefill: the reference."""
    out = {}
    for r in _requests():
        out.update(_by_id(_backend(tiny_model, batch_size=1, reuse_prefix=False), [r]))
    return out


def test_stream_seed_depends_on_messages_and_seed_only():
    a = ChatRequest("a", ({"role": "user", "content": "x"},), seed=3)
    assert stream_seed(a) == stream_seed(ChatRequest("other-id", a.messages, 3))
    # canonical: key order and tuple-vs-list do not matter
    assert stream_seed(a) == stream_seed(ChatRequest("a", [{"content": "x", "role": "user"}], 3))
    assert stream_seed(a) != stream_seed(ChatRequest("a", a.messages, 4))
    assert stream_seed(a) != stream_seed(ChatRequest("a", ({"role": "user", "content": "y"},), 3))
    assert 0 <= stream_seed(a) < 2**63


def test_early_stops_really_happen(alone):
    """The fixture's premise: rows of one batch finish at different steps."""
    lengths = {n for _, finish, n in alone.values() if finish == "stop"}
    assert len(lengths) >= 2 and any(f == "length" for _, f, _ in alone.values())


@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_same_samples_in_any_batch_size_with_and_without_prefix_cache(
        tiny_model, alone, batch_size, reuse_prefix):
    backend = _backend(tiny_model, batch_size=batch_size, reuse_prefix=reuse_prefix)
    assert _by_id(backend, _requests()) == alone
    if reuse_prefix:
        assert len(backend._store)  # the shared system prompt's keys and values were kept


def test_same_samples_in_any_order_and_mixed_with_other_requests(tiny_model, alone):
    reqs = _requests()
    assert _by_id(_backend(tiny_model, batch_size=2), reqs[::-1]) == alone
    # other requests around them: another system prompt (so a shorter shared prefix, other
    # padding), other lengths, other seeds; shuffled in
    others = _requests("o", OTHER_SYSTEM, seed=7) + [
        ChatRequest("long", _conv(SYSTEM, "a much longer question " * 6), 2)]
    mixed = reqs + others
    random.Random(0).shuffle(mixed)
    got = _by_id(_backend(tiny_model, batch_size=3), mixed)
    assert {k: got[k] for k in alone} == alone
    # and the others are what they are alone too
    for r in others:
        assert _by_id(_backend(tiny_model, batch_size=1), [r])[r.request_id] == got[r.request_id]


def test_top_p_samples_do_not_depend_on_batching(tiny_model):
    params = SamplingParams(temperature=0.8, top_p=0.7, max_new_tokens=10)
    reqs = _requests()
    one = {}
    for r in reqs:
        one.update(_by_id(_backend(tiny_model, batch_size=1), [r], params))
    assert _by_id(_backend(tiny_model, batch_size=3), reqs[::-1], params) == one
    assert one != _by_id(_backend(tiny_model, batch_size=3), reqs)   # params matter


def test_seed_changes_the_sample_request_id_does_not(tiny_model):
    conv = _conv(SYSTEM, "tell me three things about rivers")
    reqs = [ChatRequest("a", conv, 0), ChatRequest("b", conv, 1), ChatRequest("c", conv, 0)]
    out = _by_id(_backend(tiny_model, batch_size=3), reqs)
    assert out["a"] != out["b"]            # same messages, another seed: another sample
    assert out["a"] == out["c"]            # same messages and seed, another id, same batch
    renamed = ChatRequest("zzz", conv, 1)  # alone, under another id
    assert _by_id(_backend(tiny_model, batch_size=1), [renamed])["zzz"] == out["b"]


def test_rows_stopped_by_a_stop_string_count_only_their_own_tokens(tiny_model):
    """With a pad token that is not end of sequence, a row stopped by a stop string is padded
    while the rest of its batch goes on; those pads are not its tokens: same completion,
    token count included, as alone."""
    model, tok = tiny_model
    tok = copy.deepcopy(tok)
    tok.pad_token = "<|endoftext|>"
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=("e",))

    def backend(batch_size):
        b = HFBackend(model=model, tokenizer=tok, show_progress=False, batch_size=batch_size)
        assert tok.pad_token_id not in b.eos_ids
        return b

    reqs = _requests()
    batched = _by_id(backend(len(reqs)), reqs, params)
    one = {}
    for r in reqs:
        one.update(_by_id(backend(1), [r], params))
    assert batched == one
    counts = {n for _, finish, n in batched.values() if finish == "stop"}
    assert counts and min(counts) < max(n for _, _, n in batched.values())  # some stopped early


def test_same_samples_whatever_the_response_cache_holds(tiny_model, alone, tmp_path):
    """Records lost from the response cache are regenerated as misses in a smaller batch, and
    come back identical (the scenario of a lost judge record before per-request streams)."""
    reqs = _requests()
    cached = CachedBackend(_backend(tiny_model, batch_size=4), tmp_path / "cache", "tiny@x")
    first = _by_id(cached, reqs)
    assert first == alone and cached.calls == len(reqs)
    records = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(records) == len(reqs)
    for path in records[::2]:
        path.unlink()
    again = CachedBackend(_backend(tiny_model, batch_size=4), tmp_path / "cache", "tiny@x")
    assert _by_id(again, reqs) == first
    assert again.calls == len(records[::2]) and again.hits == len(reqs) - again.calls


def test_gumbel_sampler_is_an_exact_sample():
    """argmax(logits / T + Gumbel) over one row's stream has the softmax(logits / T)
    distribution restricted to the top-p set; a row's draws do not depend on other rows."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    temperature, top_p, n = 0.7, 0.9, 20000
    probs = torch.softmax(logits[0] / temperature, dim=-1)
    order = torch.argsort(probs, descending=True)
    keep = order[: int((torch.cumsum(probs[order], 0) < top_p).sum()) + 1]
    want = torch.zeros_like(probs)
    want[keep] = probs[keep] / probs[keep].sum()
    assert 0 < len(keep) < len(probs)          # top-p really cuts here
    sampler = GumbelSampler([123], temperature, top_p, "cpu")
    draws = torch.tensor([int(sampler(None, logits).argmax()) for _ in range(n)])
    freq = torch.bincount(draws, minlength=len(probs)).double() / n
    assert torch.all(freq[want == 0] == 0)
    assert torch.allclose(freq, want.double(), atol=0.015)
    # stream independence: row 0 of a two-row sampler draws what a one-row sampler draws
    pair = GumbelSampler([123, 456], temperature, top_p, "cpu")
    solo = GumbelSampler([123], temperature, top_p, "cpu")
    two = logits.repeat(2, 1)
    for _ in range(5):
        assert torch.equal(pair(None, two)[0], solo(None, logits)[0])
    with pytest.raises(ValueError, match="2 streams for a batch of 1"):
        pair(None, logits)
    with pytest.raises(ValueError, match="temperature > 0"):
        GumbelSampler([1], 0.0, 1.0, "cpu")
