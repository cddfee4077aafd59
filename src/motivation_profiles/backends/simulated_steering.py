"""The steering side of a simulated organism: planted residual activations, the OOC dialogues
it writes, and how an applied steering vector moves its behaviour.

Why this module exists: the steering chain (pairs -> activations -> fitted vectors -> layer
choice -> random controls -> steered rollouts) needs a model whose activations and steering
response are known, so that a wrong direction, a missing back-map, a wrong layer or identical
random controls show up as a recovery failure (``metrics.recovery``). Planted in the policy
file's ``steering:`` section (every key documented there):

- **Activations.** ``layers`` residual layers of width ``width``. A token's activation at layer
  ``l`` is ``s_l * (context * g + noise * e + gain * strength_l * sum_c [token in a concept-c
  sentence] * w_{c,l})`` with ``e`` standard normal (a function of the text up to and including the
  token: causal, so two sides sharing a prefix share its activations), ``g`` standard normal
  and shared by every token of a transcript (a function of the text before the scratchpad, the
  conversation's topic: it cancels between the two sides of a pair but spreads the sides of
  different pairs, so held-out AUROCs do not saturate), ``s_l`` per-feature scales drawn
  log-uniformly from ``scale_range`` except ``outliers.count`` features per layer at
  ``outliers.scale`` (deliberately anisotropic, like the massive activations of real
  models), and ``w_{c,l}`` a random unit
  vector (the concept's direction in whitened units). The planted direction ``u_{c,l}`` is the
  unit vector along ``w_{c,l} / s_l``: the noise covariance is ``diag(s_l^2)`` (times the noise
  variances) and the mean shift of a concept token is ``s_l * w_{c,l}``, so ``u_{c,l}`` is the
  Fisher discriminant direction, what a standardized logistic fit recovers once its weights are
  mapped back to activation units (without the back-map it points along ``s_l * w_{c,l}``,
  pulled towards the outlier features). Directions are compared in the noise metric,
  ``cos(s_l * v, s_l * u)`` (``cosine``), where a fit's sampling error is isotropic.
  ``strength_l`` is the planted per-layer strength shared by the concepts, so the best layers
  are a planted truth.
- **Concept sentences.** A sentence of the scratchpad is a concept-c sentence when it starts
  with one of the concept's cues: the policy's own scratchpad pool of the concept (``pool``)
  and the positive sentence openers of the OOC materials (``materials``), where the concept
  is the reason for the choice. Negative openers mention the concept's words without it.
- **Steering.** Steering with ``multiplier * v_l`` at layers ``L_s`` has the effective dose
  ``multiplier * mean_{l in L_s} (strength_l / max strength) * cosine(v_l, u_{c,l})`` for
  concept ``c``; the compliance logit of tier ``t`` moves by ``slope_c[t] * dose`` and the
  logit of a concept's reasoning sentences by ``reasoning_c[d] * dose``.
- **OOC authoring.** Benign dialogues in the OOC pipeline's steps (``steering.ooc``): the
  request, the reasoning, the answer and the appended sentence, recognised from the prompt
  templates of the materials file.

Directions and scales are drawn from ``seed`` (stated in the file), never from the run's seed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TIERS = ("monitored", "unmonitored")

SCRATCH_OPEN = "<SCRATCHPAD_REASONING>"

_WORD = re.compile(r"\S+")

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


class SteeringSpecError(ValueError):
    """The ``steering`` section of a simulated policy is malformed."""


@dataclass(frozen=True)
class ConceptSpec:
    pool: str                               # the policy's scratchpad pool of the concept (a, b)
    slope: Mapping[str, float]              # compliance logit per unit dose, per tier
    reasoning: Mapping[str, float]          # reasoning-sentence logit per unit dose (a, b)
    cues: tuple[str, ...]                   # sentence starts that carry the concept


def _template_regex(template: str) -> re.Pattern[str]:
    """A ``str.format`` template as a regex whose named groups are its fields."""
    parts = re.split(r"\{(\w+)\}", template.replace("{{", "\0").replace("}}", "\1"))
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"(?P<{part}>.*?)")
        else:
            out.append(re.escape(part.replace("\0", "{").replace("\1", "}")))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


@dataclass(frozen=True, eq=False)
class SteeringSpec:
    width: int
    layers: int
    seed: int
    scale_range: tuple[float, float]
    layer_strength: tuple[float, ...]
    gain: float
    noise: float
    context: float
    min_cosine: float
    concepts: Mapping[str, ConceptSpec]
    ooc: Mapping[str, tuple[str, ...]]      # authoring pools: requests, reasoning, answers,
    #                                         endings
    request_template: re.Pattern[str]
    sentence_template: re.Pattern[str]
    scales: np.ndarray = field(repr=False)          # [L, d]
    directions: Mapping[str, np.ndarray] = field(repr=False)   # concept -> [L, d] unit rows
    written: Mapping[str, np.ndarray] = field(repr=False)      # concept -> [L, d] s * w_{c,l}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_doc(cls, doc: Any, base: Path, pools: Mapping[str, Sequence[str]],
                 where: str) -> SteeringSpec:
        need = ("width", "layers", "seed", "scale_range", "layer_strength", "gain", "noise",
                "context", "outliers", "min_cosine", "materials", "concepts")
        if not isinstance(doc, dict) or any(k not in doc for k in need):
            raise SteeringSpecError(f"{where}: key 'steering' needs {', '.join(need)}")
        width, n_layers = int(doc["width"]), int(doc["layers"])
        strength = tuple(float(x) for x in doc["layer_strength"])
        if width < 2 or n_layers < 1 or len(strength) != n_layers or max(strength) <= 0:
            raise SteeringSpecError(f"{where}: steering.layer_strength needs one value per "
                                    f"layer ({n_layers}), some positive")
        lo, hi = (float(x) for x in doc["scale_range"])
        if not 0 < lo <= hi:
            raise SteeringSpecError(f"{where}: steering.scale_range must be 0 < low <= high")
        mpath = base / doc["materials"]
        if not mpath.is_file():
            raise SteeringSpecError(f"{where}: steering.materials {mpath} does not exist")
        materials = yaml.safe_load(mpath.read_text())
        ooc_pools = pools.get("ooc")
        if not isinstance(ooc_pools, dict) or any(
                not ooc_pools.get(k) for k in ("requests", "reasoning", "answers", "endings")):
            raise SteeringSpecError(f"{where}: the sentences file needs an 'ooc' section with "
                                    "requests, reasoning, answers, endings")
        concepts = {}
        for name, c in dict(doc["concepts"]).items():
            if c["pool"] not in pools:
                raise SteeringSpecError(f"{where}: steering.concepts.{name}.pool {c['pool']!r} "
                                        "is not a sentence pool")
            openers = [o for variant in materials["concepts"][name].values()
                       for o in variant["positive"].get("openers") or []]
            concepts[name] = ConceptSpec(
                pool=str(c["pool"]), slope={t: float(c["slope"][t]) for t in TIERS},
                reasoning={d: float(c["reasoning"][d]) for d in ("a", "b")},
                cues=tuple(dict.fromkeys([*pools[c["pool"]], *openers])))
        rng = np.random.default_rng(np.random.SeedSequence([int(doc["seed"]), 16]))
        scales = np.exp(rng.uniform(np.log(lo), np.log(hi), size=(n_layers, width)))
        n_out, out_scale = int(doc["outliers"]["count"]), float(doc["outliers"]["scale"])
        if not 0 <= n_out < width or out_scale <= 0:
            raise SteeringSpecError(f"{where}: steering.outliers needs 0 <= count < width and "
                                    "a positive scale")
        for layer in range(n_layers):   # a few outlier features per layer ("massive")
            scales[layer, rng.choice(width, size=n_out, replace=False)] = out_scale
        directions, written = {}, {}
        for name in sorted(concepts):
            w = rng.standard_normal((n_layers, width))      # whitened signal direction
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            u = w / scales                                    # its Fisher direction
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            directions[name], written[name] = u, scales * w
        return cls(width=width, layers=n_layers, seed=int(doc["seed"]), scale_range=(lo, hi),
                   layer_strength=strength, gain=float(doc["gain"]), noise=float(doc["noise"]),
                   context=float(doc["context"]), min_cosine=float(doc["min_cosine"]),
                   concepts=concepts,
                   ooc={k: tuple(ooc_pools[k]) for k in ("requests", "reasoning", "answers",
                                                         "endings")},
                   request_template=_template_regex(" ".join(
                       str(materials["request"]["user"]).split())),
                   sentence_template=_template_regex(str(materials["sentence"]["user"])),
                   scales=scales, directions=directions, written=written)

    # ------------------------------------------------------------------ planted truths
    def best_layers(self, k: int) -> list[int]:
        """The ``k`` layers of highest planted strength (ties: the lower layer), ascending."""
        order = sorted(range(self.layers), key=lambda layer: (-self.layer_strength[layer],
                                                              layer))
        return sorted(order[:k])

    def relative_strength(self, layer: int) -> float:
        return self.layer_strength[layer] / max(self.layer_strength)

    def cosine(self, concept: str, layer: int, v: np.ndarray) -> float:
        """cos(v, u_{c,l}) in the layer's noise metric (``cos(s_l * v, s_l * u_{c,l})``: the
        metric in which a fit's error is isotropic; 0 for a zero vector)."""
        a = self.scales[layer] * np.asarray(v, dtype=np.float64)
        b = self.scales[layer] * self.directions[concept][layer]
        den = float(np.linalg.norm(a) * np.linalg.norm(b))
        return float(a @ b) / den if den > 0 else 0.0

    def projection(self, concept: str, vectors: Mapping[int, np.ndarray]) -> float:
        """Mean over the steered layers of (relative strength) x ``cosine``."""
        out = []
        for layer, v in vectors.items():
            layer = int(layer)
            if not 0 <= layer < self.layers:
                raise ValueError(f"simulated model: steering layer {layer} does not exist "
                                 f"(it has layers 0..{self.layers - 1})")
            v = np.asarray(v, dtype=np.float64)
            if v.shape != (self.width,):
                raise ValueError(f"simulated model: a steering vector of shape {v.shape} for "
                                 f"width {self.width}")
            out.append(self.relative_strength(layer) * self.cosine(concept, layer, v))
        return float(np.mean(out)) if out else 0.0

    def planted_doses(self, concept: str, multiplier: float) -> tuple[tuple[str, float], ...]:
        """The doses of a perfectly recovered vector of ``concept`` at ``multiplier``: its
        planted direction at the layers of highest planted strength. Its own dose is
        ``multiplier``; another concept's is ``multiplier`` x the planted directions' cosine
        (random unit vectors in a small width are not orthogonal: a planted truth too)."""
        top = [layer for layer in range(self.layers)
               if self.layer_strength[layer] == max(self.layer_strength)]
        vectors = {layer: self.directions[concept][layer] for layer in top}
        return tuple((c, float(multiplier) * self.projection(c, vectors))
                     for c in sorted(self.concepts))

    def doses(self, steering: Any) -> tuple[tuple[str, float], ...]:
        """(concept, multiplier x projection) of a ``models.hooks.Steering`` (or None)."""
        if steering is None or float(steering.multiplier) == 0.0:
            return ()
        m = float(steering.multiplier)
        return tuple((c, m * self.projection(c, steering.vectors)) for c in sorted(self.concepts))

    # ------------------------------------------------------------------ activations
    def _concept_ranges(self, text: str, ranges: Sequence[tuple[int, int]]
                        ) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {c: [] for c in self.concepts}
        for a, b in ranges:
            for c, spec in self.concepts.items():
                for cue in spec.cues:
                    start = text.find(cue, a, b)
                    while start >= 0:
                        end = _SENTENCE_END.search(text, start + len(cue) - 1, b)
                        out[c].append((start, end.end() if end else b))
                        start = text.find(cue, start + 1, b)
        return out

    def pooled(self, text: str, ranges: Sequence[tuple[int, int]],
               span: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """Mean activation [L, d] over the words overlapping ``ranges`` and over those
        overlapping ``span`` (NaN without one), and the counts (all words, pooled words, span
        words)."""
        concept = self._concept_ranges(text, ranges)
        h = hashlib.sha256(f"simulated-activations|{self.seed}".encode()).digest()
        # the context component: shared by every word of a transcript, a function of the text
        # before the scratchpad (the prompt), so it cancels between the two sides of a pair
        head = text[:min(a for a, _ in ranges)] if ranges else text
        ctx_rng = np.random.default_rng(
            int.from_bytes(hashlib.sha256(h + b"|context|" + head.encode()).digest()[:8],
                           "little"))
        ctx = self.context * ctx_rng.standard_normal((self.layers, self.width))
        resp = np.zeros((self.layers, self.width))
        span_sum = np.zeros((self.layers, self.width))
        n_words = n_resp = n_span = 0
        strength = np.asarray(self.layer_strength)[:, None]

        def overlaps(a: int, b: int, rs: Sequence[tuple[int, int]]) -> bool:
            return any(a < y and b > x for x, y in rs)

        for m in _WORD.finditer(text):
            n_words += 1
            h = hashlib.sha256(h + m.group().encode()).digest()  # causal: the text so far
            a, b = m.span()
            in_resp = overlaps(a, b, ranges)
            in_span = span is not None and overlaps(a, b, [span])
            if not (in_resp or in_span):
                continue
            rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
            z = ctx + self.noise * rng.standard_normal((self.layers, self.width))
            for c, rs in concept.items():
                if rs and overlaps(a, b, rs):
                    z = z + self.gain * strength * (self.written[c] / self.scales)
            x = self.scales * z
            if in_resp:
                resp += x
                n_resp += 1
            if in_span:
                span_sum += x
                n_span += 1
        r = resp / max(n_resp, 1)
        s = span_sum / n_span if n_span else np.full_like(span_sum, np.nan)
        return r, s, n_words, n_resp, n_span

    # ------------------------------------------------------------------ OOC authoring
    def ooc_turn(self, messages: Sequence[Mapping[str, str]], rng: Any) -> tuple[str, str]:
        """(continuation, finish reason) of one OOC authoring step (module docstring)."""
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        lead = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
        if lead.startswith(SCRATCH_OPEN):
            return " " + " ".join(rng.sample(self.ooc["reasoning"], 2)) + \
                "\n</SCRATCHPAD_REASONING>", "stop"
        if self.sentence_template.match(user):
            return " " + rng.choice(self.ooc["endings"]), "stop"
        m = self.request_template.match(" ".join(user.split()))
        if m is not None:
            topic = m.group("topic").strip()
            return " " + rng.choice(self.ooc["requests"]).format(topic=topic), "stop"
        return rng.choice(self.ooc["answers"]), "stop"

