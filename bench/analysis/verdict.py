"""``bench verdict``: does a model "run well on inexpensive hardware"? Measured rows against a
claims file (which tiers count as inexpensive; what "runs" means), per model x tier.

A criterion is ``pass``, ``fail`` or ``unmeasured`` (never guessed). A row passes when every
criterion the claims file sets passes; a configuration (variant x backend x settings) passes a
tier when every workload measured for it there passes (newest row per cell); a model passes a
tier when at least one configuration does. The cheapest passing tier is by $/hour.

Speed criteria (decode, TTFT) on a tier are decided from rows measured on the tier itself where
they exist, else from the performance model's projection of an emulated row onto the tier, at the
interval's pessimistic end; never from this host's own speed under the tier's caps. Fit is decided
under the caps as measured.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.analysis.flat import (
    basis,
    flatten,
    interval_missing,
    latest_per_cell,
    projected,
    speed_basis,
    tier_decode_tps,
    tier_label,
)
from bench.claims import Claims, Criteria, Inexpensive
from bench.models.catalog import Model
from bench.results.kinds import Basis, SpeedBasis
from bench.results.schema import Row
from bench.results.serving import ServingRow

Outcome = Literal["pass", "fail", "unmeasured"]


@dataclass(frozen=True)
class Check:
    """One criterion on one row. ``value``: what was measured, in full (bound and basis included),
    or for ``unmeasured`` why not, in full; ``short``: for a table cell, the value alone ("10.7",
    "2.48 s"), or for ``unmeasured`` the reason as the dashboard numbers it (the gist, with what a
    reader needs to act; ``--json`` gives ``value``); ``parts``: the checks of a composite criterion
    (quality retained)."""

    criterion: str
    outcome: Outcome
    value: str
    short: str = ""
    parts: tuple[Check, ...] = ()


@dataclass
class RowVerdict:
    row: Row
    checks: list[Check]

    @property
    def outcome(self) -> Outcome:
        outcomes = {c.outcome for c in self.checks}
        return "fail" if "fail" in outcomes else ("unmeasured" if "unmeasured" in outcomes else "pass")

    def check(self, criterion: str) -> Check | None:
        return next((c for c in self.checks if c.criterion == criterion), None)


def disturbed(r: Row) -> str | None:
    """The DISTURBED flags of a row's timed pass (bench.measuring.machine_state), or None."""
    return r.machine.label


@dataclass
class TierVerdict:
    model: str
    country: str
    tier: str
    usd_per_hour: float | None
    inexpensive: bool
    best: RowVerdict | None  # None: nothing measured on this tier (``missing`` says why)
    configurations: int  # variant x backend x settings measured on this tier
    missing: str | None = None

    @property
    def outcome(self) -> Outcome:
        return self.best.outcome if self.best else "unmeasured"

    @property
    def configuration(self) -> str:
        if self.best is None:
            return "-"
        return f"{self.best.row.config.variant_id} / {self.best.row.config.backend}"

    @property
    def basis_tag(self) -> str:
        """The basis in one word for a table: ``measured`` (this host as it is), ``measured on tier``
        (a machine that is the tier), ``PROJECTED`` (fit under the tier's caps here, speed projected
        onto the tier), ``emulated`` (fit under the caps, the tier's speed not known) or ``-``."""
        if self.best is None:
            return "-"
        r = self.best.row
        kind = r.basis
        if kind is Basis.MEASURED:
            return "measured" if r.config.profile_id == "auto" else "measured on tier"
        if kind is Basis.NOT_MEASURED:
            return "-"
        return "PROJECTED" if r.speed_kind is SpeedBasis.PROJECTED else "emulated"

    @property
    def disturbed(self) -> str | None:
        return disturbed(self.best.row) if self.best else None

    @property
    def basis(self) -> str:
        """Where the deciding row was measured, and on which machine."""
        if self.best is None:
            return f"not measured: {self.missing}"
        r = self.best.row
        host, kind = r.host, r.basis
        if kind is Basis.MEASURED and r.environment.fleet is not None:
            return f"measured on the tier: {host} (fleet node {(r.environment.fleet.node_id or '?')[:12]})"
        if kind is Basis.MEASURED:
            return f"measured on {host} as it is" if r.config.profile_id == "auto" else f"measured on the tier: {host}"
        if kind is Basis.NOT_MEASURED:
            return f"{basis(r)} ({host})"
        return (f"fit emulated on {host} ({r.tier.thread_cap or '?'}; RAM {r.tier.enforcement or '?'}); "
                f"speed: {speed_basis(r)}")


@dataclass
class Verdict:
    claims: Claims
    tiers: list[TierVerdict]
    cheapest: dict[str, TierVerdict | None] = field(default_factory=dict)  # model -> cheapest passing tier


def _task_key(r: Row) -> tuple:
    t = r.config.task
    return (r.config.model_id, *((t.name, t.limit, t.shots, t.max_new_tokens) if t else (None,) * 4))


def _fits(r: Row, f: dict[str, Any], why: str) -> Check:
    if r.status in ("does_not_fit", "oom"):
        what = r.status.replace("_", " ")
        return Check("fits", "fail", f"{what}: {r.reason}" if r.reason else what, what)
    if f["fits"] is None:
        return Check("fits", "unmeasured", why or "no RAM budget for this tier", why or "no RAM budget for this tier")
    peak, budget = f["peak_rss_bytes"] / 2**20, (f["ram_budget_bytes"] or 0) / 2**20
    return Check("fits", "pass" if f["fits"] else "fail", f"{peak:.0f} of {budget:.0f} MiB", f"{peak:.0f}")


def _not_on_tier(r: Row, metric: str) -> str:
    """Why an emulated row has no speed for its tier: this host's speed is not the tier's."""
    missing = ((r.efficiency.projection or {}).get("unmeasured") or {}).get(metric)
    return (f"caps only: this host's speed under {r.tier_label}'s caps is not the tier's, and there is no "
            f"projection ({missing or 'the tier has no performance figures'})")


def _no_projection(r: Row, metric: str) -> str:
    """The gist of ``_not_on_tier``: no projection onto the tier, and what it lacks."""
    missing = ((r.efficiency.projection or {}).get("unmeasured") or {}).get(metric)
    return f"no projection onto {r.tier_label}: {missing or 'the tier has no performance figures'}"


def _no_pessimistic_end(r: Row, criterion: str, metric: str, value: str) -> Check:
    """A projection without an interval has no pessimistic end to judge: unmeasured, never a 0."""
    why = interval_missing(r, metric) or "its interval is unknown"
    return Check(criterion, "unmeasured", f"projected {value} on {r.tier_label} (PROJECTION), but {why}: no "
                                          "pessimistic end to judge", f"a projection without an interval ({why})")




def _decode(r: Row, f: dict[str, Any], c: Criteria, why: str) -> Check:
    """Decode on the tier: measured on it, else the projection's pessimistic (low) end."""
    assert c.decode_tps_min is not None
    text_per_token = (f["decode_text_bps_mean"] / f["decode_tps_mean"]
                      if f["decode_text_bps_mean"] and f["decode_tps_mean"] else None)
    unit = "B/s" if c.speed_unit == "utf8_bytes" else "tok/s"
    if why:
        return Check("decode tok/s", "unmeasured", why, why)
    if r.speed_kind is SpeedBasis.MEASURED:
        v = f["decode_text_bps_mean"] if unit == "B/s" else f["decode_tps_mean"]
        if v is None:
            return Check("decode tok/s", "unmeasured", f"no decode rate in {unit}", f"no decode rate in {unit}")
        text = f"; {f['decode_text_bps_mean']:.0f} B/s of text" if unit == "tok/s" and text_per_token else ""
        return Check("decode tok/s", "pass" if v >= c.decode_tps_min else "fail",
                     f"{v:.1f} {unit} (>= {c.decode_tps_min:g}){text}", f"{v:.1f}")
    low, value, high = (projected(r, "decode_tps", e) for e in ("low", "value", "high"))
    if value is not None and low is None:
        return _no_pessimistic_end(r, "decode tok/s", "decode_tps", f"{value:.1f} tok/s")
    if low is None or value is None:
        return Check("decode tok/s", "unmeasured", _not_on_tier(r, "decode_tps"), _no_projection(r, "decode_tps"))
    scale = 1.0
    if unit == "B/s":
        if text_per_token is None:
            return Check("decode tok/s", "unmeasured", "no text rate measured to carry onto the tier",
                         "no text rate measured")
        scale = text_per_token
    span = f"{low * scale:.1f}-{high * scale:.1f}" if high is not None else f">= {low * scale:.1f}"
    return Check("decode tok/s", "pass" if low * scale >= c.decode_tps_min else "fail",
                 f"{low * scale:.1f} {unit} PROJECTED, pessimistic end of {span} (model {value * scale:.1f}; "
                 f">= {c.decode_tps_min:g}; {speed_basis(r)})", f"{low * scale:.1f}")


def _ttft(r: Row, f: dict[str, Any], c: Criteria, why: str) -> Check:
    """TTFT on the tier: measured on it, else the projection's pessimistic (high) end."""
    assert c.ttft_s_max is not None
    if why:
        return Check("TTFT", "unmeasured", why, why)
    if r.config.prompt_tokens < c.ttft_min_prompt_tokens:
        return Check("TTFT", "unmeasured", f"prompt of {r.config.prompt_tokens} tokens, the claim needs "
                                           f">= {c.ttft_min_prompt_tokens}", "prompt too short")
    if r.speed_kind is SpeedBasis.MEASURED:
        v = f["ttft_s_mean"]
        if v is None:
            return Check("TTFT", "unmeasured", "no TTFT", "no TTFT")
        return Check("TTFT", "pass" if v <= c.ttft_s_max else "fail",
                     f"{v:.2f} s at p={r.config.prompt_tokens} (<= {c.ttft_s_max:g})", f"{v:.2f}")
    low, value, high = (projected(r, "ttft_s", e) for e in ("low", "value", "high"))
    if value is not None and high is None:
        return _no_pessimistic_end(r, "TTFT", "ttft_s", f"{value:.2f} s")
    if high is None or value is None:
        return Check("TTFT", "unmeasured", _not_on_tier(r, "ttft_s"), _no_projection(r, "ttft_s"))
    return Check("TTFT", "pass" if high <= c.ttft_s_max else "fail",
                 f"{high:.2f} s PROJECTED at p={r.config.prompt_tokens}, pessimistic end of {low:.2f}-{high:.2f} "
                 f"(model {value:.2f}; <= {c.ttft_s_max:g}; {speed_basis(r)})", f"{high:.2f}")


# -- quality retained: against the developer's original release only ---------------------------
def is_original(r: Row, model: Model | None) -> bool:
    """The row measured the model's original release (the catalog's ``original``)."""
    return model is not None and model.original == r.config.variant_id


def reference_problem(model: Model | None, model_id: str, reference: str | None) -> str | None:
    """Why a quality measurement against ``reference`` does not say what the model's original
    release retains, or None when ``reference`` is that release. A file derived from a quantized
    one (an F16 made from a Q4_1, say) holds that quantization's loss: a variant compared with it
    is compared with itself, more or less."""
    if model is None:
        return f"{model_id} is not in the catalog: its original release is not known"
    if model.original is None:
        return f"the catalog names no original release of {model_id}"
    if reference is None:
        return "no reference variant"
    if reference == model.original:
        return None
    root = model.derived_from(reference)
    if root is not None:
        return f"reference {reference} is derived from {root}, not the original release {model.original}"
    return f"reference {reference} is not the original release {model.original}"


def _kld(r: Row, f: dict[str, Any], c: Criteria, model: Model | None) -> Check:
    """KLD from the original release; a KLD against any other reference is shown, unmeasured."""
    if is_original(r, model):
        return Check("KLD", "pass", "is the original release (its own reference)", "original")
    if f["kld_mean"] is None and r.quality.ok and r.quality.perplexity is not None:
        note = r.quality.note or "no reference variant"
        return Check("KLD", "unmeasured", f"perplexity {r.quality.perplexity:.2f} only: {note}", _reference_gist(note))
    if f["kld_mean"] is None:
        why = r.quality.reason or r.quality.note
        return Check("KLD", "unmeasured", why or "no KLD in this row (run with --quality)",
                     "the quality pass failed" if r.quality.reason else "no KLD measured (run with --quality)")
    reference = r.quality.reference.variant_id if r.quality.reference else None
    why = reference_problem(model, r.config.model_id, reference)
    if why is not None:
        return Check("KLD", "unmeasured", f"KLD {f['kld_mean']:.4f} against {reference} does not count: {why}", why)
    assert c.kld_max is not None
    return Check("KLD", "pass" if f["kld_mean"] <= c.kld_max else "fail", f"{f['kld_mean']:.4f} (<= {c.kld_max:g})",
                 f"{f['kld_mean']:.4f}")


def _accuracy(r: Row, f: dict[str, Any], c: Criteria, model: Model | None, original: float | None,
              use_published: bool = True) -> Check:
    """Task accuracy against the original release's on the same task; where the original was not run,
    against its published score (``_vs_published``) unless a KLD was measured against it."""
    acc = f["task_accuracy"]
    if is_original(r, model):
        return Check("accuracy retained", "pass", "is the original release (its own reference)", "original")
    if acc is None:
        return Check("accuracy retained", "unmeasured", "no task accuracy (run with --task)",
                     "no task accuracy (run with --task)")
    if not original:
        published = _vs_published(r, c) if use_published else None
        if published is not None:
            return published
        name = model.original if model is not None and model.original else "the original release"
        why = ("its published score is not used where the variant was measured against the original"
               if not use_published
               else f"no published {r.task.id or r.task.name} score of the original in the catalog")
        return Check("accuracy retained", "unmeasured", f"{acc:.1%}; no task accuracy of {name} on the same "
                                                        f"task to compare with; {why}", f"no task accuracy of {name}")
    assert c.accuracy_retained_min is not None
    kept = acc / original
    return Check("accuracy retained", "pass" if kept >= c.accuracy_retained_min else "fail",
                 f"{kept:.1%} of {original:.1%} (>= {c.accuracy_retained_min:.0%})", f"{kept:.1%}")


def quality_check(r: Row, c: Criteria, model: Model | None, original_accuracy: dict[tuple, float],
                  where: str = "") -> Check | None:
    """Quality retained: KLD and/or task accuracy, whichever the claims set and the row measured; a
    measured failure fails, a measured pass passes, nothing measured is ``unmeasured``."""
    f = flatten(r)
    parts: list[Check] = []
    if c.kld_max is not None:
        parts.append(_kld(r, f, c, model))
    if c.accuracy_retained_min is not None:
        # A published score is used only where nothing was measured against the original itself.
        measured_vs_original = any(q.outcome != "unmeasured" for q in parts)
        parts.append(_accuracy(r, f, c, model, original_accuracy.get(_task_key(r)),
                               use_published=not measured_vs_original))
    if not parts:
        return None
    outcomes = {q.outcome for q in parts}
    outcome: Outcome = "fail" if "fail" in outcomes else ("pass" if "pass" in outcomes else "unmeasured")
    short = next(q.short for q in parts if q.outcome == outcome)
    if outcome == "unmeasured":
        short = "; ".join(f"{q.criterion}: {q.short}" for q in parts)
    return Check("quality retained", outcome, "; ".join(f"{q.criterion} {q.outcome}: {q.value}" for q in parts)
                 + where, short, tuple(parts))


HUB_GIST = ("no original release available offline (only the Hugging Face hub has it): run once with the hub "
            "reachable, or give the original variant a local `path:` source")


def _reference_gist(note: str) -> str:
    """Why a quality pass measured perplexity only, in a few words (from bench.measuring.plan's note)."""
    if "could not be had" in note:
        return HUB_GIST if "unreachable" in note else "the original release could not be had"
    if "no reference" in note:
        return "no reference variant named"
    return "the reference cannot be scored here"


def original_accuracies(rows: Sequence[Row], models: dict[str, Model]) -> dict[tuple, float]:
    """The original release's task accuracy per task (model, task, limit, shots, answer length)."""
    out: dict[tuple, float] = {}
    for r in rows:
        acc = flatten(r)["task_accuracy"]
        if acc is not None and is_original(r, models.get(r.config.model_id)):
            out[_task_key(r)] = acc
    return out


def _vs_published(r: Row, c: Criteria) -> Check | None:
    """The hook to bench.quality.published: the row's task accuracy against the original release's
    published score on the same task (from the row's catalog facts), with its own basis tag."""
    from bench.quality.published import compare_with_published, published_for

    published = published_for(r.model.facts.to_dict() if r.model.facts else None, r.task.id or r.task.name)
    if published is None or not r.task.ok:
        return None
    assert c.accuracy_retained_min is not None
    res = compare_with_published(r.task.to_dict(), published, c.accuracy_retained_min,
                                 may_pass=c.published_comparison == "may_pass")
    head = res.value.split(" published")[0]  # "90.0% ± 6.7% (18/20) of 70.7%"
    short = f"{head.split(' ')[0]} vs {head.rsplit(' ', 1)[-1]} published"
    if "could fail it" in res.value:  # no outcome of this many items could have failed the comparison
        short += f": too low a score to judge at {r.task.items} items"
    elif res.value.startswith("informs only"):
        short += " (informs only: claims published_comparison inform)"
    return Check("accuracy retained vs published", res.outcome, res.value, short)  # type: ignore[arg-type]


def serving_point(r: Row, users: int, serving: Sequence[ServingRow]) -> ServingRow | None:
    """The newest bench serve point at ``users`` concurrent users (closed loop) of the row's model,
    variant and tier; a point measured on the tier wins over one emulated on another host."""
    same = [p for p in serving if p.record == "point" and p.mode == "concurrency" and p.load_value == users
            and p.model_id == r.config.model_id and p.variant_id == r.config.variant_id
            and p.tier_label == r.tier_label]
    return max(same, key=lambda p: (p.measured, p.created_at)) if same else None


def serving_checks(r: Row, c: Criteria, serving: Sequence[ServingRow]) -> list[Check]:
    """decode_tps_min and ttft_s_max with ``c.concurrent_users`` users at once, from the serving point
    at that concurrency: a user's decode rate = 1 / TPOT p50 (the typical user's, as a bench run
    row's decode is the mean over its repetitions), TTFT = TTFT p90 (waiting is what a user notices
    under load, and queueing makes its tail long: nine users in ten wait no longer). No point, a point
    emulated on another host, or a point that could not run: ``unmeasured``, never a pass."""
    n = c.concurrent_users
    assert n is not None
    names = [name for name, bound in ((f"decode tok/s @{n} users", c.decode_tps_min),
                                      (f"TTFT @{n} users", c.ttft_s_max)) if bound is not None]
    p = serving_point(r, n, serving)
    why = None
    if p is None:
        why = (f"no serving point at {n} concurrent users for {r.config.model_id}:{r.config.variant_id} on "
               f"{r.tier_label}; run bench serve -m {r.config.model_id}:{r.config.variant_id} "
               f"-p {r.config.profile_id} -c {n}")
    elif not p.measured:
        why = (f"bench serve ran under {r.tier_label}'s threads on {p.host} ({p.basis}): this host's speed under "
               "load, not the tier's; serve on the tier itself")
    elif p.status == "failed" and (p.reason or "").startswith("not run"):
        why = f"the point at c={n} did not run: {p.reason}"
    if why is not None:
        return [Check(name, "unmeasured", why, why) for name in names]
    assert p is not None
    if p.status != "ok":  # requests failed under this load: users were not served
        return [Check(name, "fail", f"{p.status} at c={n}: {p.reason}", p.status) for name in names]
    checks = []
    if c.decode_tps_min is not None:
        checks.append(_serving_decode(p, c))
    if c.ttft_s_max is not None:
        checks.append(_serving_ttft(p, c))
    return checks


def _serving_decode(p: ServingRow, c: Criteria) -> Check:
    from bench.analysis.serving import per_user_decode_tps

    name = f"decode tok/s @{c.concurrent_users} users"
    if c.speed_unit == "utf8_bytes":
        return Check(name, "unmeasured", "serving rows measure tokens, not bytes of text: speed_unit tokens",
                     "serving rows measure tokens, not bytes")
    v = per_user_decode_tps(p)
    if v is None:
        return Check(name, "unmeasured", "no TPOT at this point", "no TPOT")
    assert c.decode_tps_min is not None
    return Check(name, "pass" if v >= c.decode_tps_min else "fail",
                 f"{v:.1f} tok/s per user (1 / TPOT p50; >= {c.decode_tps_min:g}; {p.basis})", f"{v:.1f}")


def _serving_ttft(p: ServingRow, c: Criteria) -> Check:
    from bench.analysis.serving import stat

    name = f"TTFT @{c.concurrent_users} users"
    s = p.point_summary
    ok = s.ok or 0
    if s.prompt_tokens is None and c.ttft_min_prompt_tokens:
        why = s.total_tps_unavailable or "no prompt token count at this point"
        return Check(name, "unmeasured", why, "prompt lengths not known")
    prompt = (s.prompt_tokens or 0) / ok if ok else 0
    if prompt < c.ttft_min_prompt_tokens:
        return Check(name, "unmeasured", f"prompts of {prompt:.0f} tokens on average, the claim needs "
                                         f">= {c.ttft_min_prompt_tokens}", "prompts too short")
    v = stat(p, "ttft_s", "p90")
    if v is None:
        return Check(name, "unmeasured", "no TTFT at this point", "no TTFT")
    assert c.ttft_s_max is not None
    return Check(name, "pass" if v <= c.ttft_s_max else "fail",
                 f"{v:.2f} s p90 at p={prompt:.0f} (<= {c.ttft_s_max:g}; {p.basis})", f"{v:.2f}")


def context_tokens(r: Row) -> int:
    """Tokens in context at the end of a row's requests: depth + prompt + generated."""
    return r.config.depth + r.config.prompt_tokens + r.config.gen_tokens


def predicted_context_fit(r: Row) -> int | None:
    """The largest context predicted to fit the row's tier (bench.hardware.tiers
    .largest_context_that_fits, with the row's KV cache types); None without a GGUF header or budget."""
    from bench.backends.llamacpp.options import kv_settings
    from bench.hardware.tiers import largest_context_that_fits

    g, size, budget = r.model.gguf, r.model.size_bytes, r.tier.ram_budget_bytes
    if not g or not size or budget is None:
        return None
    kv = kv_settings(r.config.backend_options)
    repacked = (r.tier.predicted_memory or {}).get("repack_bytes", 0)
    return largest_context_that_fits(g, size, budget - repacked, r.config.prompt_tokens, kv.type_k, kv.type_v,
                                     kv.flash_attn)


def context_check(r: Row, c: Criteria, at_depth: Sequence[Row]) -> Check:
    """"Runs well with N tokens of context" (c.context_tokens_min) for the configuration of ``r`` on its
    tier: judged on the shallowest row of ``at_depth`` (the same configuration and tier, measured at a
    depth) whose context (depth + prompt + generated) reaches N: its measured fit and its decode and
    TTFT against the claims' bounds, as any row's. Without such a row: ``fail`` if the fit prediction
    says N cannot fit the tier (a PREDICTION, so labelled), else ``unmeasured``, never a pass."""
    n = c.context_tokens_min
    assert n is not None
    fit = predicted_context_fit(r)
    fit_text = (f"largest context predicted to fit {fit} tokens (PREDICTION)" if fit is not None
                else "no fit prediction (no GGUF header or RAM budget)")
    deep = sorted((x for x in at_depth if context_tokens(x) >= n), key=lambda x: (context_tokens(x), x.created_at))
    if not deep:
        if fit is not None and fit < n:
            return Check("context", "fail", f"{n} tokens: {fit_text}; none measured",
                         f"{n} tokens do not fit: at most {fit} predicted (PREDICTION)")
        depth = max(0, n - r.config.prompt_tokens - r.config.gen_tokens)
        return Check("context", "unmeasured", f"{n} tokens: no row with that much context ({fit_text}); run "
                                              f"bench run -m {r.config.model_id}:{r.config.variant_id} "
                                              f"-p {r.config.profile_id} --depth {depth}",
                         f"no row with {n} tokens of context: run with --depth {depth}")
    d = deep[0]
    f, why = flatten(d), f"{d.status}: {d.reason}" if d.status != "ok" else ""
    parts = [_fits(d, f, why)] if c.fits else []
    if c.decode_tps_min is not None:
        parts.append(_decode(d, f, c, why))
    if c.ttft_s_max is not None:
        parts.append(_ttft(d, f, c, why))
    outcomes = {p.outcome for p in parts}
    outcome: Outcome = "fail" if "fail" in outcomes else ("unmeasured" if "unmeasured" in outcomes or not parts
                                                          else "pass")
    detail = "; ".join(f"{p.criterion} {p.outcome}: {p.value}" for p in parts)
    short = (f"@{d.config.depth}" if outcome != "unmeasured"
             else next((p.short or p.value for p in parts if p.outcome == "unmeasured"), "no criterion to judge it by"))
    return Check("context", outcome, f"{n} tokens, measured at depth {d.config.depth} ({context_tokens(d)} in "
                                     f"context): {detail}; {fit_text}", short)


def split_at_depth(rows: Sequence[Row]) -> tuple[list[Row], dict[tuple, list[Row]]]:
    """(rows at depth 0, rows measured at a depth by (configuration, tier)): a row at a depth answers
    the context criterion only; the other criteria judge the claim's workload from an empty context."""
    at_depth: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        if r.config.depth:
            at_depth[(configuration(r), tier_label(r))].append(r)
    return [r for r in rows if not r.config.depth], at_depth


def configuration(r: Row) -> tuple:
    """A configuration is a variant on a backend with its settings, whatever the tier."""
    c = r.config
    return (c.model_id, c.variant_id, c.backend, repr(sorted(c.backend_options.items())))


def _has_quality(r: Row) -> bool:
    return bool(r.quality) or bool(r.task)


def check_row(r: Row, c: Criteria, models: dict[str, Model], original_accuracy: dict[tuple, float],
              quality_from: Row | None = None, serving: Sequence[ServingRow] = (),
              at_depth: Sequence[Row] = ()) -> RowVerdict:
    """Each criterion the claims set, on one row. Quality does not depend on the tier a
    configuration runs on (the same numbers are computed), so a row without quality takes it from
    ``quality_from``, a row of the same configuration that measured it, and says where. ``models``:
    the catalog's models, which name each one's original release."""
    f = flatten(r)
    why = f"{r.status}: {r.reason}" if r.status != "ok" else ""
    checks: list[Check] = []
    if c.fits:
        checks.append(_fits(r, f, why))
    if c.decode_tps_min is not None:
        checks.append(_decode(r, f, c, why))
    if c.ttft_s_max is not None:
        checks.append(_ttft(r, f, c, why))
    if c.concurrent_users is not None:
        checks += serving_checks(r, c, serving)
    if c.context_tokens_min is not None:
        checks.append(context_check(r, c, at_depth))
    q_row, where = r, ""
    if not _has_quality(r) and quality_from is not None:
        q_row, where = quality_from, f" (measured on {quality_from.tier_label})"
    quality = quality_check(q_row, c, models.get(r.config.model_id), original_accuracy, where)
    if quality is not None:
        checks.append(quality)
    return RowVerdict(r, checks)


def _country(r: Row, catalog_countries: dict[str, str | None]) -> str:
    country = r.model.facts.country if r.model.facts else None
    return country or catalog_countries.get(r.config.model_id) or "unknown"


def is_inexpensive(tier: str, profile_id: str, usd: float | None, inexpensive: Inexpensive) -> bool:
    if inexpensive.tiers is not None and profile_id not in inexpensive.tiers and tier not in inexpensive.tiers:
        return False
    if inexpensive.max_usd_per_hour is not None:
        return usd is not None and usd <= inexpensive.max_usd_per_hour
    return True


def _unmeasured_tiers(have: list[TierVerdict], expected: dict[str, list[tuple[str, float | None, str]]],
                      claims: Claims, countries: dict[str, str | None]) -> list[TierVerdict]:
    """A row for each (model, tier) that was asked about but has no measurement, saying why."""
    seen = {(tv.model, tv.tier) for tv in have}
    out = []
    for model, tiers in expected.items():
        for tier, usd, why in tiers:
            if (model, tier) not in seen:
                out.append(TierVerdict(model, countries.get(model) or "unknown", tier, usd,
                                       is_inexpensive(tier, tier, usd, claims.inexpensive), None, 0, why))
    return out


def judge(rows: Sequence[Row], claims: Claims, catalog_countries: dict[str, str | None] | None = None,
          expected: dict[str, list[tuple[str, float | None, str]]] | None = None,
          serving: Sequence[ServingRow] = (), models: Sequence[Model] = ()) -> Verdict:
    """The verdict per model x tier. ``expected`` lists, per model, the tiers the verdict must
    cover as (tier, $/hour, why it may be missing): a tier with no row is shown as unmeasured.
    ``serving``: bench serve's records, read where the claims set ``concurrent_users``. ``models``:
    the catalog's, naming each model's original release (without them quality is unmeasured)."""
    countries = {**{m.id: m.country for m in models}, **(catalog_countries or {})}
    by_id = {m.id: m for m in models}
    original_accuracy = original_accuracies(rows, by_id)
    # A configuration (variant x backend x settings) passes a tier only if every workload measured
    # for it there passes (the newest row of each cell); the tier passes if one configuration does.
    groups: dict[tuple[str, str], dict[tuple, list[Row]]] = defaultdict(lambda: defaultdict(list))
    quality_of: dict[tuple, Row] = {}  # configuration -> its newest row that measured quality
    latest = latest_per_cell(list(rows))
    # A tier with rows measured on the tier itself (a fleet node that is the tier) is judged on those
    # alone: emulation answers "does it fit", only the tier answers "how fast".
    measured_tiers = {(r.config.model_id, tier_label(r)) for r in latest if r.basis is Basis.MEASURED}
    position = {id(r): i for i, r in enumerate(rows)}
    kept = [r for r in latest
            if (r.config.model_id, tier_label(r)) not in measured_tiers or r.basis is Basis.MEASURED]
    base, at_depth = split_at_depth(sorted(kept, key=lambda r: (r.created_at, position[id(r)])))  # newest last
    for r in base:
        groups[(r.config.model_id, tier_label(r))][configuration(r)].append(r)
        if _has_quality(r) and r.status == "ok":
            quality_of[configuration(r)] = r
    order = {"pass": 0, "unmeasured": 1, "fail": 2}

    def rank(v: RowVerdict) -> tuple:
        return (order[v.outcome], sum(c.outcome == "fail" for c in v.checks), -(tier_decode_tps(v.row)[0] or 0))

    tiers = []
    for (model, tier), configs in sorted(groups.items()):
        deciding = [max((check_row(r, claims.criteria, by_id, original_accuracy, quality_of.get(key), serving,
                                   at_depth.get((key, tier), ())) for r in rs), key=rank)
                    for key, rs in configs.items()]  # each configuration's worst workload decides it
        best = min(deciding, key=rank)
        usd = best.row.profile.hourly_usd()
        tiers.append(TierVerdict(model, _country(best.row, countries), tier, usd,
                                 is_inexpensive(tier, best.row.config.profile_id, usd, claims.inexpensive), best,
                                 len(configs)))
    cheapest: dict[str, TierVerdict | None] = {}
    for tv in _unmeasured_tiers(tiers, expected or {}, claims, countries):
        tiers.append(tv)
    tiers.sort(key=lambda tv: (tv.model, tv.tier))
    for tv in tiers:
        cheapest.setdefault(tv.model, None)
        if tv.outcome == "pass" and tv.usd_per_hour is not None:
            cur = cheapest[tv.model]
            if cur is None or tv.usd_per_hour < (cur.usd_per_hour or float("inf")):
                cheapest[tv.model] = tv
    return Verdict(claims, tiers, cheapest)
