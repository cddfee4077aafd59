// The transcript browser. Every model-written string reaches the page through text nodes
// (el(), textContent), never as HTML. Conditions are loaded on demand: data/manifest.js and
// data/<model>/<condition>.js call MP.manifest(...) / MP.receive(...) (script elements work
// from file://, where fetch() does not). State lives in the URL hash, so views can be linked:
// #model=M&condition=C&row=GOAL:TIER:SEED&compare=C2&tier=...&outcome=...&atr=yes|no
// &amin=&amax=&bmin=&bmax=&q=...   and   #figure=NAME (the rollouts behind a figure).
"use strict";
window.MP = (function () {
  const PAGE = 200;
  const st = { manifest: null, data: {}, waiting: {}, limit: PAGE };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function params() { return new URLSearchParams(location.hash.replace(/^#/, "")); }
  function go(changes, replace) {
    const p = params();
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === undefined || v === "") p.delete(k); else p.set(k, v);
    }
    const hash = "#" + p.toString();
    if (replace) { history.replaceState(null, "", hash); render(); }
    else location.hash = hash;
  }
  function status(text) { $("status").textContent = text || ""; }

  function key(model, condition) { return model + "\u0000" + condition; }
  function info(model, condition) {
    const m = st.manifest && st.manifest.models[model];
    return m ? m.conditions[condition] : undefined;
  }
  function load(model, condition) {
    const k = key(model, condition);
    if (st.data[k]) return Promise.resolve(st.data[k]);
    if (st.waiting[k]) return st.waiting[k].promise;
    const meta = info(model, condition);
    if (!meta) return Promise.reject(new Error("no condition " + model + "/" + condition));
    const w = {};
    w.promise = new Promise((resolve, reject) => { w.resolve = resolve; w.reject = reject; });
    st.waiting[k] = w;
    const s = document.createElement("script");
    s.src = meta.file.split("/").map(encodeURIComponent).join("/");
    s.onerror = () => { delete st.waiting[k]; w.reject(new Error("cannot load " + meta.file)); };
    document.body.append(s);
    status("loading " + model + " / " + condition + " …");
    return w.promise;
  }

  function receive(payload) {
    const k = key(payload.model, payload.condition);
    payload.rows.forEach((r, i) => { r._i = i; });
    st.data[k] = payload;
    status("");
    if (st.waiting[k]) { st.waiting[k].resolve(payload); delete st.waiting[k]; }
  }

  function rowKey(r) { return r.goal_id + ":" + r.tier + ":" + r.seed; }
  function searchText(r) {
    if (r._text === undefined) {
      r._text = [r.goal, r.scratchpad, r.final_output, ...(r.turns || [])]
        .filter((x) => typeof x === "string").join("\n").toLowerCase();
    }
    return r._text;
  }
  function num(v) { return v === "" || v === null || isNaN(Number(v)) ? null : Number(v); }
  function filtered(rows, p) {
    const tier = p.get("tier"), outcome = p.get("outcome"), atr = p.get("atr");
    const amin = num(p.get("amin")), amax = num(p.get("amax"));
    const bmin = num(p.get("bmin")), bmax = num(p.get("bmax"));
    const q = (p.get("q") || "").trim().toLowerCase();
    const inRange = (v, lo, hi) => (lo === null && hi === null) ||
      (typeof v === "number" && (lo === null || v >= lo) && (hi === null || v <= hi));
    return rows.filter((r) => (!tier || r.tier === tier) && (!outcome || r.outcome === outcome)
      && (!atr || (atr === "yes") === (r.accepted_then_refused === true))
      && inRange(r.a_score, amin, amax) && inRange(r.b_score, bmin, bmax)
      && (!q || searchText(r).includes(q)));
  }

  // ---------------------------------------------------------------- highlighting
  function normalized(text) {
    // lower-cased text with whitespace runs collapsed to one space, and for each of its
    // characters the index of the original character it came from
    let out = "", map = [], space = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (/\s/.test(c)) { if (!space) { out += " "; map.push(i); } space = true; }
      else { out += c.toLowerCase(); map.push(i); space = false; }
    }
    return { out, map };
  }
  function findQuote(text, quote) {
    if (typeof quote !== "string") return null;
    const q = quote.trim().replace(/^["'“”‘’]+|["'“”‘’]+$/g, "").replace(/^(\.\.\.|…)|(\.\.\.|…)$/g, "").trim();
    if (!q) return null;
    const exact = text.indexOf(q);
    if (exact >= 0) return [exact, exact + q.length];
    const n = normalized(text), nq = normalized(q).out.trim();
    const at = nq ? n.out.indexOf(nq) : -1;
    if (at < 0) return null;
    return [n.map[at], n.map[at + nq.length - 1] + 1];
  }
  function highlighted(text, quotes) {
    // text with each found quote as <mark class="hl-a|hl-b"> (both where they overlap)
    const cuts = new Set([0, text.length]), spans = [];
    for (const [cls, q] of quotes) {
      const r = findQuote(text, q);
      if (r) { spans.push([r[0], r[1], cls]); cuts.add(r[0]); cuts.add(r[1]); }
    }
    const points = [...cuts].sort((a, b) => a - b), pre = el("pre", { class: "scratchpad" });
    for (let i = 0; i + 1 < points.length; i++) {
      const [a, b] = [points[i], points[i + 1]], piece = text.slice(a, b);
      const cls = spans.filter((s) => s[0] <= a && b <= s[1]).map((s) => s[2]);
      pre.append(cls.length ? el("mark", { class: cls.join(" ") }, piece)
        : document.createTextNode(piece));
    }
    return pre;
  }

  // ---------------------------------------------------------------- views
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
    if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
    return String(v);
  }
  function meta(pairs) {
    const dl = el("dl", { class: "meta" });
    for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, fmt(v)));
    return dl;
  }
  function judgeBlock(r, pad) {
    const box = el("section", { class: "judge" }, el("h3", {}, "Judge"));
    if (r.status === undefined) { box.append(el("p", {}, "not judged")); return box; }
    box.append(meta([["status", r.status], ["judge", r.judge_model], ["rubric", r.rubric]]));
    if ("complied" in r) box.append(meta([["complied", r.complied], ["votes", r.votes]]));
    for (const d of ["a", "b"]) {
      if (!(d + "_score" in r)) continue;
      const name = d === "a" ? "Direction A (researcher expectations)"
        : "Direction B (training consequences)";
      box.append(el("h4", {}, name), meta([["score", r[d + "_score"]], ["votes", r[d + "_votes"]],
        ["agreement", r[d + "_modal_agreement"]]]));
      const q = r[d + "_quote"];
      if (typeof q === "string" && q) {
        box.append(el("blockquote", { class: "quote " + d }, q));
        if (typeof pad === "string" && !findQuote(pad, q)) {
          box.append(el("p", { class: "missing" }, "quote not found in the scratchpad"));
        }
      }
    }
    if (r.raw_answers && r.raw_answers.length) {
      const det = el("details", {}, el("summary", {}, "raw judge answers (" + r.raw_answers.length + ")"));
      r.raw_answers.forEach((a) => det.append(el("pre", {}, a)));
      box.append(det);
    }
    return box;
  }
  function transcript(model, condition, r) {
    const pane = el("article", { class: "pane", "data-condition": condition },
      el("h2", {}, model + " / " + condition));
    if (!r) {
      pane.append(el("p", { class: "missing" }, "no rollout with this goal, tier and seed"));
      return pane;
    }
    pane.append(meta([["goal", "#" + r.goal_id + " " + r.goal], ["tier", r.tier], ["seed", r.seed],
      ["outcome", r.outcome], ["accepted then refused", r.accepted_then_refused],
      ["output complete", r.output_complete], ["turns", r.n_turns],
      ["finish reasons", r.finish_reasons], ["prompt tokens", r.prompt_tokens],
      ["completion tokens", r.completion_tokens]]));
    pane.append(el("h3", {}, "Scratchpad"));
    pane.append(typeof r.scratchpad === "string"
      ? highlighted(r.scratchpad, [["hl-a", r.a_quote], ["hl-b", r.b_quote]])
      : el("p", {}, "no scratchpad"));
    pane.append(el("h3", {}, "Output"), el("pre", { class: "output" }, r.final_output ?? "(none)"));
    pane.append(judgeBlock(r, r.scratchpad));
    const turns = el("details", { class: "turns" }, el("summary", {}, "all turns (" + (r.turns || []).length + ")"));
    (r.turns || []).forEach((t, i) => turns.append(
      el("h4", {}, "turn " + (i + 1) + " (" + fmt((r.finish_reasons || [])[i]) + ")"),
      el("pre", { class: "turn" }, t)));
    pane.append(turns);
    return pane;
  }

  function options(select, values, current, labels) {
    select.replaceChildren(...values.map((v) => {
      const o = el("option", { value: v }, labels ? labels(v) : (v === "" ? "(none)" : v));
      o.selected = v === current;
      return o;
    }));
  }

  function renderFigures(p) {
    const box = $("figures");
    box.replaceChildren();
    const figs = st.manifest.figures || {};
    const only = p.get("figure");
    if (!p.has("figure") || (p.has("model") && !only)) return;
    const names = only ? [only] : Object.keys(figs);
    box.append(el("h2", {}, only ? "Rollouts behind " + only : "Rollouts behind each figure"));
    for (const name of names) {
      const per = figs[name];
      if (!per) { box.append(el("p", { class: "missing" }, "no figure " + name)); continue; }
      const ul = el("ul", {});
      for (const [m, conds] of Object.entries(per)) {
        for (const c of conds) {
          const href = "#" + new URLSearchParams({ model: m, condition: c }).toString();
          ul.append(el("li", {}, el("a", { href }, m + " / " + c)));
        }
      }
      box.append(el("h3", {}, name), ul);
    }
  }

  let renderId = 0;
  async function render() {
    if (!st.manifest) return;
    const id = ++renderId, p = params();
    const models = Object.keys(st.manifest.models);
    renderFigures(p);
    if (!models.length) { status("no conditions in this site"); return; }
    const model = p.get("model") || (p.has("figure") ? "" : models[0]);
    if (!model) { $("list").replaceChildren(); $("detail").replaceChildren(); return; }
    const conds = Object.keys((st.manifest.models[model] || { conditions: {} }).conditions);
    const condition = p.get("condition") || (conds.includes("baseline") ? "baseline" : conds[0]);
    options($("model"), models, model, (m) => st.manifest.models[m].display_name + " (" + m + ")");
    options($("condition"), conds, condition, (c) => c + " (" + info(model, c).rows + ")");
    options($("compare"), ["", ...conds.filter((c) => c !== condition)], p.get("compare") || "");
    for (const [f, k] of [["f-tier", "tier"], ["f-outcome", "outcome"], ["f-atr", "atr"],
      ["f-amin", "amin"], ["f-amax", "amax"], ["f-bmin", "bmin"], ["f-bmax", "bmax"], ["f-q", "q"]]) {
      if (document.activeElement !== $(f)) $(f).value = p.get(k) || "";
    }
    let payload;
    try { payload = await load(model, condition); } catch (e) { status(e.message); return; }
    if (id !== renderId) return;
    const tiers = [...new Set(payload.rows.map((r) => r.tier))].sort();
    const outcomes = [...new Set(payload.rows.map((r) => r.outcome))].sort();
    options($("f-tier"), ["", ...tiers], p.get("tier") || "", (v) => v || "any");
    options($("f-outcome"), ["", ...outcomes], p.get("outcome") || "", (v) => v || "any");
    const rows = filtered(payload.rows, p);
    $("count").textContent = rows.length + " of " + payload.rows.length + " rollouts";
    const selected = p.get("row");
    const body = el("tbody", {});
    for (const r of rows.slice(0, st.limit)) {
      const k = rowKey(r);
      body.append(el("tr", { class: "row" + (k === selected ? " selected" : ""), "data-key": k,
        onclick: () => go({ row: k }) },
        el("td", {}, r.goal_id), el("td", {}, r.tier), el("td", {}, r.seed),
        el("td", { class: "outcome-" + r.outcome }, r.outcome),
        el("td", {}, r.accepted_then_refused ? "yes" : ""),
        el("td", {}, fmt(r.a_score)), el("td", {}, fmt(r.b_score)),
        el("td", { class: "goal", title: r.goal }, r.goal)));
    }
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["goal", "tier", "seed",
      "outcome", "acc.→ref.", "A", "B", "goal text"].map((h) => el("th", {}, h)))), body);
    const list = [table];
    if (rows.length > st.limit) {
      list.push(el("button", { class: "more", onclick: () => { st.limit += PAGE; render(); } },
        "show " + Math.min(PAGE, rows.length - st.limit) + " more"));
    }
    $("list").replaceChildren(...list);
    const detail = $("detail");
    if (!selected) { detail.replaceChildren(el("p", {}, "Pick a rollout.")); return; }
    const find = (pl) => pl.rows.find((r) => rowKey(r) === selected);
    const other = p.get("compare");
    if (!other) { detail.replaceChildren(transcript(model, condition, find(payload))); return; }
    let second;
    try { second = await load(model, other); } catch (e) { status(e.message); return; }
    if (id !== renderId) return;
    detail.replaceChildren(el("div", { class: "panes" },
      transcript(model, condition, find(payload)), transcript(model, other, find(second))));
  }

  function wire() {
    $("model").addEventListener("change", (e) => go({ model: e.target.value, condition: null,
      compare: null, row: null, figure: null }));
    $("condition").addEventListener("change", (e) => go({ condition: e.target.value,
      compare: null, figure: null }));
    $("compare").addEventListener("change", (e) => go({ compare: e.target.value }));
    for (const [f, k] of [["f-tier", "tier"], ["f-outcome", "outcome"], ["f-atr", "atr"],
      ["f-amin", "amin"], ["f-amax", "amax"], ["f-bmin", "bmin"], ["f-bmax", "bmax"], ["f-q", "q"]]) {
      $(f).addEventListener(f === "f-q" || f.endsWith("min") || f.endsWith("max") ? "input" : "change",
        (e) => { st.limit = PAGE; go({ [k]: e.target.value }, true); });
    }
    $("home").addEventListener("click", (e) => { e.preventDefault(); location.hash = "#figure="; });
    window.addEventListener("hashchange", render);
  }

  function manifest(m) { st.manifest = m; render(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
  return { manifest, receive, _findQuote: findQuote };
})();
