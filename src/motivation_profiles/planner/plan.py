"""The cost table of a config: one row per (model, rule) with jobs, tokens, GPU-hours,
hosted-API requests / tokens / dollars and disk, and the totals. Every number comes from a
formula of :mod:`motivation_profiles.planner.formulas` applied to the jobs of Snakemake's DAG
(:mod:`motivation_profiles.planner.jobs`); a rule without a formula counts its jobs at zero
cost."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.planner import formulas as F
from motivation_profiles.planner.calibrate import Calibration
from motivation_profiles.planner.jobs import Job, Plans, calibration_jobs, dag_jobs
from motivation_profiles.planner.settings import planner_settings

log = logging.getLogger(__name__)

COLUMNS = ("model", "rule", "jobs", "generated_tokens", "prefill_tokens", "trained_tokens",
           "hours", "gpu_hours", "api_requests", "api_cached", "api_input_tokens",
           "api_output_tokens", "usd", "disk_gb")
"""The cost table's columns (tokens are counts; ``hours``: job hours on the model's devices,
CPU jobs included; ``gpu_hours``: hours x GPUs; disk in 1e9 bytes)."""

NUMERIC = COLUMNS[2:]
DEFAULT_GOAL_CHARS = 70.0  # an AdvBench goal's mean length, when the file is not local


@dataclass
class Cost:
    generated_tokens: float = 0.0
    prefill_tokens: float = 0.0
    trained_tokens: float = 0.0
    hours: float = 0.0
    gpu_hours: float = 0.0
    api_requests: float = 0.0
    api_cached: float = 0.0
    api_input_tokens: float = 0.0
    api_output_tokens: float = 0.0
    usd: float = 0.0
    disk_gb: float = 0.0


def _chars(path: str | Path | None, base: Path) -> int:
    if not path:
        return 0
    p = Path(path) if Path(path).is_absolute() else base / path
    return len(p.read_text(encoding="utf-8")) if p.is_file() else 0


def _goals(config: Mapping[str, Any], base: Path) -> tuple[int, float]:
    """(number of goals, mean goal length in characters)."""
    g = config["goals"]
    path = g["path"]
    n_file, mean = F.ADVBENCH_GOALS, DEFAULT_GOAL_CHARS
    if path:
        p = Path(path) if Path(path).is_absolute() else base / path
        if p.is_file():
            with open(p, newline="", encoding="utf-8") as fh:
                goals = [row["goal"] for row in csv.DictReader(fh)]
            n_file, mean = len(goals), sum(map(len, goals)) / max(len(goals), 1)
    return (min(g["n"], n_file) if g["n"] else n_file), mean


def cache_hits(cache_dir: str | Path) -> dict[str, int]:
    """Records of hosted answers already in the response cache, by the model they came from
    (``record.model``); counted as hits for the requests of that model (an approximation:
    records of another config's requests are counted too)."""
    root = Path(cache_dir)
    hits: dict[str, int] = defaultdict(int)
    if not root.is_dir():
        return {}
    for f in root.glob("??/*.json"):
        try:
            rec = json.loads(f.read_text(encoding="utf-8")).get("record", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("model"), str) and "usage" in rec:
            hits[rec["model"]] += 1
    return dict(hits)


@dataclass
class Planner:
    config: Mapping[str, Any]
    base_dir: Path = Path(".")
    calibration: Calibration | None = None
    settings: dict[str, Any] = field(init=False)
    plans: Plans = field(init=False)
    _dag: list[Job] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.settings = planner_settings(self.config)
        self.plans = Plans(self.config)
        self.n_goals, self.goal_chars = _goals(self.config, self.base_dir)
        self.cpt = float(self.settings["chars_per_token"])
        prompts = self.config["prompts"]
        self.base_prompt_chars = (_chars(prompts["system"], self.base_dir)
                                  + _chars(prompts["user_template"], self.base_dir)
                                  + self.goal_chars)
        self._hits = cache_hits(self.base_dir / self.config["hosted"]["cache_dir"]
                                if not Path(self.config["hosted"]["cache_dir"]).is_absolute()
                                else self.config["hosted"]["cache_dir"])

    # ------------------------------------------------------------------ rates
    def spec(self, model: str) -> Mapping[str, Any]:
        return self.config["models"][model]

    def rate(self, model: str, kind: str) -> float:
        """Tokens per second of one job of ``model`` (kind: generate | prefill | train)."""
        override = self.settings["models"].get(model, {})
        if kind in override:
            return float(override[kind])
        if (kind == "generate" and self.calibration
                and model in self.calibration.generate_tok_s):
            return self.calibration.generate_tok_s[model]
        spec = self.spec(model)
        table = self.settings["throughput"]
        gpu_type = self.settings["gpu_type"] if spec.get("gpus", 0) else "cpu"
        return F.job_rate(float(table[gpu_type][kind]), int(spec.get("gpus", 0)),
                          float(spec.get("params_b", 1.0)))

    def share(self, model: str) -> float:
        """T * f: expected generated tokens per rollout / max_new_tokens (measured by the
        calibration run for the same model, else the configured assumptions)."""
        r = self.config["rollouts"]
        if self.calibration and model in self.calibration.tokens_per_rollout:
            return self.calibration.tokens_per_rollout[model] / r["max_new_tokens"]
        turns = F.expected_turns(self.settings["rollout_turns"], r["max_turns"])
        return turns * self.settings["turn_fill"]

    def turns(self) -> float:
        return F.expected_turns(self.settings["rollout_turns"],
                                self.config["rollouts"]["max_turns"])

    # ------------------------------------------------------------------ per job
    def _local(self, cost: Cost, model: str, gen: float, prefill: float, train: float = 0):
        h = (F.hours(gen, self.rate(model, "generate"))
             + F.hours(prefill, self.rate(model, "prefill"))
             + F.hours(train, self.rate(model, "train")))
        cost.hours += h
        cost.gpu_hours += F.gpu_hours(h, int(self.spec(model).get("gpus", 0)))

    def _api(self, cost: Cost, model_id: str, requests: float, tokens_in: float,
             tokens_out: float) -> None:
        prices = self.config["hosted"]["prices"]
        if model_id not in prices:
            raise ValueError(f"hosted.prices has no price for {model_id!r} (USD per million "
                             "tokens [input, output]); add it to plan this config")
        price_in, price_out = prices[model_id]
        hits = min(requests, self._take_hits(model_id, requests))
        share = (requests - hits) / requests if requests else 0.0
        batched = F.uses_batches(requests - hits, self.config["hosted"]["batch_threshold"])
        cost.api_requests += requests
        cost.api_cached += hits
        cost.api_input_tokens += tokens_in
        cost.api_output_tokens += tokens_out
        cost.usd += F.api_usd(tokens_in * share, tokens_out * share, price_in, price_out,
                              batched, self.settings["batch_factor"])

    def _take_hits(self, model_id: str, wanted: float) -> float:
        for name in list(self._hits):
            if name == model_id or name.startswith(model_id) or model_id.startswith(name):
                take = min(self._hits[name], int(wanted))
                self._hits[name] -= take
                return take
        return 0.0

    def job_cost(self, job: Job) -> Cost:
        c = Cost()
        handler = getattr(self, f"_cost_{job.rule}", None)
        if handler is not None:
            handler(c, job)
        return c

    def _rollout_numbers(self, model: str, condition: str) -> tuple[int, float, float, float]:
        """(R, generated, prefill, scratchpad tokens per rollout) of one rollout job."""
        r_cfg = self.config["rollouts"]
        R = F.rollouts_per_job(self.n_goals, len(r_cfg["seeds"]))
        if condition.startswith("raw-"):
            max_new = self.config["steering"]["raw"]["max_new_tokens"]
            fill = self.settings["turn_fill"]
            prompt = (self.goal_chars + 40) / self.cpt
            return (R, F.rollout_generated(R, 1.0, fill, max_new),
                    F.rollout_prefill(R, 1.0, prompt, fill, max_new), fill * max_new)
        claim = None
        if not condition.startswith("steer-"):
            claim = self.plans.prompt.condition_spec(condition, model=model)["claim"]
        claim_chars = len(claim) if isinstance(claim, str) else 0
        prompt = (self.base_prompt_chars + claim_chars) / self.cpt
        turns, share = self.turns(), self.share(model)
        max_new = r_cfg["max_new_tokens"]
        gen = F.rollout_generated(R, 1.0, share, max_new)
        if (r_cfg["output_mode"] == "forced_choice"
                and self.spec(model)["source"] not in ("anthropic", "simulated")):
            out = r_cfg.get("output_tokens")
            gen += F.forced_output(R, self.settings["turn_fill"],
                                   max_new if out is None else out)
        prefill = F.rollout_prefill(R, turns, prompt, share / turns, max_new)
        return R, gen, prefill, share * max_new

    def _cost_rollouts(self, c: Cost, job: Job) -> None:
        R, gen, prefill, _ = self._rollout_numbers(job.model, job.target)
        c.generated_tokens, c.prefill_tokens = gen, prefill
        spec = self.spec(job.model)
        if spec["source"] == "anthropic":
            turns = 1.0 if job.target.startswith("raw-") else self.turns()
            self._api(c, spec["model_id"], R * turns, prefill, gen)
        else:
            self._local(c, job.model, gen, prefill)
        c.disk_gb = F.text_bytes(gen, self.cpt) / 1e9

    def _judge_common(self, c: Cost, requests: float, tokens_in: float, max_tokens: int):
        j = self.config["judge"]
        out = F.capped_output(requests, self.settings["judge_fill"], max_tokens)
        c.generated_tokens, c.prefill_tokens = out, tokens_in
        if j["backend"] == "anthropic":
            self._api(c, j["model"], requests, tokens_in, out)
        else:
            self._local(c, j["model"], out, tokens_in)

    def _cost_judge(self, c: Cost, job: Job) -> None:
        j = self.config["judge"]
        R, _, _, pad = self._rollout_numbers(job.model, job.target)
        requests = F.judge_requests(R, self.settings["scratchpad_share"], j["samples"])
        rubric = _chars(j["rubric"], self.base_dir) / self.cpt
        self._judge_common(c, requests, requests * (rubric + pad), j["max_tokens"])

    def _cost_judge_raw(self, c: Cost, job: Job) -> None:
        j = self.config["judge"]
        R, _, _, response = self._rollout_numbers(job.model, job.target)
        requests = F.judge_requests(R, 1.0, j["samples"])
        rubric = _chars(self.config["steering"]["raw"]["rubric"], self.base_dir) / self.cpt
        per = rubric + self.goal_chars / self.cpt + response
        self._judge_common(c, requests, requests * per, j["max_tokens"])

    def _documents(self, universe: str) -> tuple[dict[str, int], float, float]:
        """(requests per stage, output tokens, input tokens) of one universe."""
        g = self.config["sdf"]["generator"]
        req = F.document_requests(g["n_doc_types"], g["ideas_per_type"], g["docs_per_idea"],
                                  g["revise"])
        fill = self.settings["document_fill"]
        out = sum(F.capped_output(n, fill, g["max_tokens"][stage]) for stage, n in req.items())
        templates = sum(_chars(Path(g["prompts_dir"]) / f, self.base_dir) for f in (
            "doc_types.txt", "doc_ideas.txt", "document.txt", "revision.txt")) / 4
        uni = _chars(Path(self.config["sdf"]["universes_dir"]) / f"{universe}.yaml",
                     self.base_dir)
        per = (templates + uni) / self.cpt
        tokens_in = sum(req.values()) * per + req["revision"] * fill * g["max_tokens"]["document"]
        return req, out, tokens_in

    def _cost_generate_documents(self, c: Cost, job: Job) -> None:
        if job.target in self.config["sdf"]["external_documents"]:
            return
        g = self.config["sdf"]["generator"]
        req, out, tokens_in = self._documents(job.target)
        c.generated_tokens, c.prefill_tokens = out, tokens_in
        if g["backend"] == "anthropic":
            self._api(c, g["model"], sum(req.values()), tokens_in, out)
        else:
            self._local(c, g["model"], out, tokens_in)

    def _cost_train_lora(self, c: Cost, job: Job) -> None:
        sdf = self.plans.sdf
        budget = sdf.token_budget(job.target)
        if budget is None:  # the whole corpus: its documents' tokens
            g = self.config["sdf"]["generator"]
            req = F.document_requests(g["n_doc_types"], g["ideas_per_type"], g["docs_per_idea"],
                                      g["revise"])
            budget = F.capped_output(req["document"], self.settings["document_fill"],
                                     g["max_tokens"]["document"])
        epochs = sdf.training(job.model, job.target)["epochs"]
        c.trained_tokens = F.training_tokens(budget, epochs)
        self._local(c, job.model, 0, 0, c.trained_tokens)
        c.disk_gb = F.lora_adapter_bytes(float(self.spec(job.model).get("params_b", 1)),
                                         self.config["sdf"]["lora"]["rank"]) / 1e9

    def _cost_ooc_pairs(self, c: Cost, job: Job) -> None:
        if job.target in self.config["steering"]["external_pairs"]:
            return
        o = self.plans.steering.ooc_settings(job.model)   # the model's own pair counts
        requests = o["candidates_per_round"] * o["max_rounds"]  # upper bound: every round
        c.generated_tokens = F.capped_output(requests, 1.0, o["max_tokens"]["dialogue"])
        self._local(c, job.model, c.generated_tokens, 0)

    def _cost_activations(self, c: Cost, job: Job) -> None:
        st = self.config["steering"]
        if job.target.startswith("ooc_"):
            splits = self.plans.steering.ooc_settings(job.model)["splits"]
            split = next(k for k in splits if job.target.endswith(f"_{k}"))
            pairs = splits[split]
            per_row = st["ooc"]["max_tokens"]["dialogue"]
        else:
            pairs = st["ic"]["n_train"] + st["ic"]["n_validation"]
            per_row = self.base_prompt_chars / self.cpt + self.share(job.model) * \
                self.config["rollouts"]["max_new_tokens"]
        rows = 2 * pairs
        c.prefill_tokens = rows * per_row
        self._local(c, job.model, 0, c.prefill_tokens)
        c.disk_gb = F.activation_cache_bytes(rows, float(self.spec(job.model).get("params_b",
                                                                                    1))) / 1e9

    def _cost_prepare_model(self, c: Cost, job: Job) -> None:
        spec = self.spec(job.model)
        c.disk_gb = F.checkpoint_bytes(float(spec.get("params_b", 0)),
                                       spec.get("dtype", "bfloat16")) / 1e9

    # ------------------------------------------------------------------ the table
    def jobs(self) -> list[Job]:
        """The jobs of the config's DAG, built once (in ``base_dir``)."""
        if self._dag is None:
            self._dag = dag_jobs(self.config, self.base_dir)
        return self._dag

    def table(self, jobs: list[Job] | None = None) -> pl.DataFrame:
        jobs = self.jobs() if jobs is None else jobs
        rows: dict[tuple[str, str], dict[str, float]] = {}
        browser_text = 0.0
        for job in jobs:
            cost = self.job_cost(job)
            model = job.model or ("-" if job.rule != "generate_documents"
                                  else self.config["sdf"]["generator"]["model"])
            row = rows.setdefault((model, job.rule), dict.fromkeys(NUMERIC, 0.0))
            row["jobs"] += 1
            for k in NUMERIC[1:]:
                row[k] += getattr(cost, k)
            if job.rule == "rollouts":
                browser_text += cost.disk_gb
        if ("-", "browser") in rows:
            rows[("-", "browser")]["disk_gb"] = browser_text
        records = [{"model": m, "rule": r, **v} for (m, r), v in rows.items()]
        return pl.DataFrame(records, schema={"model": pl.Utf8, "rule": pl.Utf8,
                                             **dict.fromkeys(NUMERIC, pl.Float64)}
                            ).with_columns(pl.col("jobs").cast(pl.Int64)
                                           ).sort(["model", "rule"])

    def calibration_table(self) -> pl.DataFrame:
        return self.table(calibration_jobs(self.config, self.jobs()))


def totals(table: pl.DataFrame) -> dict[str, float]:
    return {k: float(table[k].sum()) for k in NUMERIC}


def _human(v: float, unit: str = "") -> str:
    if v == 0:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}{unit}"
    return f"{v:.3g}{unit}" if not float(v).is_integer() else f"{int(v)}{unit}"


def format_table(table: pl.DataFrame, title: str) -> str:
    """A fixed-width text table with a totals line."""
    head = ("model", "rule", "jobs", "gen tok", "prefill tok", "train tok", "hours", "GPU-h",
            "API req", "cached", "API in", "API out", "USD", "disk GB")
    lines = []
    for row in table.iter_rows(named=True):
        lines.append((row["model"], row["rule"], str(row["jobs"]),
                      _human(row["generated_tokens"]), _human(row["prefill_tokens"]),
                      _human(row["trained_tokens"]),
                      f"{row['hours']:.2f}" if row["hours"] else "-", f"{row['gpu_hours']:.1f}"
                      if row["gpu_hours"] else "-", _human(row["api_requests"]),
                      _human(row["api_cached"]), _human(row["api_input_tokens"]),
                      _human(row["api_output_tokens"]),
                      f"{row['usd']:,.2f}" if row["usd"] else "-",
                      f"{row['disk_gb']:,.2f}" if row["disk_gb"] else "-"))
    t = totals(table)
    lines.append(("TOTAL", "", str(int(t["jobs"])), _human(t["generated_tokens"]),
                  _human(t["prefill_tokens"]), _human(t["trained_tokens"]),
                  f"{t['hours']:.2f}", f"{t['gpu_hours']:.1f}", _human(t["api_requests"]),
                  _human(t["api_cached"]),
                  _human(t["api_input_tokens"]), _human(t["api_output_tokens"]),
                  f"{t['usd']:,.2f}", f"{t['disk_gb']:,.2f}"))
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    rule = "-" * len(fmt(head))
    return "\n".join([title, fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


def assumptions_text(p: Planner) -> str:
    s = p.settings
    lines = [f"goals: {p.n_goals}; chars per token: {s['chars_per_token']}; expected turns per "
             f"rollout: {p.turns():g}; turn fill: {s['turn_fill']:g}; judged share: "
             f"{s['scratchpad_share']:g}; judge fill: {s['judge_fill']:g}; document fill: "
             f"{s['document_fill']:g}; Batches price factor: {s['batch_factor']:g}",
             f"GPU type: {s['gpu_type']} (tokens/s per GPU for a 1B model: "
             f"{s['throughput'][s['gpu_type']]}; per job: x gpus / params_b)"]
    if p.calibration:
        lines.append(f"calibrated: generated tok/s {p.calibration.generate_tok_s}, tokens per "
                     f"rollout {p.calibration.tokens_per_rollout}")
    return "\n".join(lines)


__all__ = ["COLUMNS", "Planner", "assumptions_text", "cache_hits", "format_table", "totals"]
