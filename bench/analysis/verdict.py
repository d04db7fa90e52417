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
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from bench.analysis.flat import (
    basis,
    basis_kind,
    flatten,
    hourly_usd,
    latest_per_cell,
    projected,
    reference_variants,
    speed_basis,
    tier_decode_tps,
    tier_label,
)
from bench.results.schema import Row
from bench.serving.rows import ServingRecord
from bench.yamlfile import StrictModel, parse_yaml_file


class Inexpensive(StrictModel):
    tiers: list[str] | None = None  # profile ids; None: any tier under the price ceiling
    max_usd_per_hour: float | None = Field(default=None, gt=0)


class Criteria(StrictModel):
    # The unit of decode_tps_min: the model's own tokens per second, or UTF-8 bytes of text per
    # second (a token of a 150k vocabulary carries more text than one of a 49k vocabulary).
    speed_unit: Literal["tokens", "utf8_bytes"] = "tokens"
    decode_tps_min: float | None = Field(default=None, gt=0)
    ttft_s_max: float | None = Field(default=None, gt=0)
    ttft_min_prompt_tokens: int = Field(default=0, ge=0)  # shorter prompts say little about TTFT
    fits: bool = True
    kld_max: float | None = Field(default=None, ge=0)
    accuracy_retained_min: float | None = Field(default=None, gt=0, le=1)
    # Set: decode_tps_min and ttft_s_max are also judged with this many users at once, from the
    # bench serve point at concurrency N of the same model, variant and tier (``serving_checks``).
    concurrent_users: int | None = Field(default=None, gt=0)
    # Where the original release cannot be run here, task accuracy is compared with its published score
    # (bench.quality.published): may_pass (labelled ``vs published``) or inform (shown, criterion unmeasured).
    published_comparison: Literal["may_pass", "inform"] = "may_pass"


class Measure(StrictModel):
    """What ``bench verdict --run`` measures for the criteria: one speed workload on every tier,
    quality (against each variant's reference) and, if set, a task, once per configuration."""

    prompt_tokens: int = Field(default=128, gt=0)
    gen_tokens: int = Field(default=64, gt=1)
    repetitions: int = Field(default=3, ge=3)
    quality: dict[str, Any] | None = None  # bench run --quality settings: {corpus, n_ctx, chunks, reference}
    task: dict[str, Any] | None = None  # bench run --task settings: {name, limit, shots, max_new_tokens, n_ctx}


class Claims(StrictModel):
    schema_version: Literal[1]
    name: str
    inexpensive: Inexpensive
    criteria: Criteria
    measure: Measure = Field(default_factory=Measure)

    @model_validator(mode="after")
    def _workload_answers_the_criteria(self) -> Claims:
        if self.criteria.ttft_s_max is not None and self.measure.prompt_tokens < self.criteria.ttft_min_prompt_tokens:
            raise ValueError(f"measure.prompt_tokens {self.measure.prompt_tokens} is below "
                             f"criteria.ttft_min_prompt_tokens {self.criteria.ttft_min_prompt_tokens}: "
                             "its TTFT could not count")
        return self


def load_claims(path: Path) -> Claims:
    return parse_yaml_file(path, Claims)


Outcome = Literal["pass", "fail", "unmeasured"]


@dataclass(frozen=True)
class Check:
    criterion: str
    outcome: Outcome
    value: str


@dataclass
class RowVerdict:
    row: Row
    checks: list[Check]

    @property
    def outcome(self) -> Outcome:
        outcomes = {c.outcome for c in self.checks}
        return "fail" if "fail" in outcomes else ("unmeasured" if "unmeasured" in outcomes else "pass")


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
    def basis(self) -> str:
        """Where the deciding row was measured, and on which machine."""
        if self.best is None:
            return f"not measured: {self.missing}"
        r = self.best.row
        host, kind = r.host, basis_kind(r)
        if kind == "measured" and r.environment.fleet is not None:
            return f"measured on the tier: {host} (fleet node {(r.environment.fleet.node_id or '?')[:12]})"
        if kind == "measured":
            return f"measured on {host} as it is" if r.config.profile_id == "auto" else f"measured on the tier: {host}"
        if kind == "not measured":
            return f"{basis(r)} ({host})"
        return (f"fit emulated on {host} ({r.tier.thread_cap or '?'}; RAM {r.tier.enforcement or '?'}); "
                f"speed: {speed_basis(r)}")


@dataclass
class Verdict:
    claims: Claims
    tiers: list[TierVerdict]
    cheapest: dict[str, TierVerdict | None] = field(default_factory=dict)  # model -> cheapest passing tier


def _task_key(r: Row) -> tuple:
    t = r.config.task or {}
    return (r.config.model_id, t.get("name"), t.get("limit"), t.get("shots"), t.get("max_new_tokens"))


def _fits(r: Row, f: dict[str, Any], why: str) -> Check:
    if r.status in ("does_not_fit", "oom"):
        return Check("fits", "fail", r.status.replace("_", " "))
    if f["fits"] is None:
        return Check("fits", "unmeasured", why or "no RAM budget for this tier")
    peak, budget = f["peak_rss_bytes"] / 2**20, (f["ram_budget_bytes"] or 0) / 2**20
    return Check("fits", "pass" if f["fits"] else "fail", f"{peak:.0f} of {budget:.0f} MiB")


def _not_on_tier(r: Row, metric: str) -> str:
    """Why an emulated row has no speed for its tier: this host's speed is not the tier's."""
    missing = ((r.efficiency.projection or {}).get("unmeasured") or {}).get(metric)
    return (f"caps only: this host's speed under {r.tier_label}'s caps is not the tier's, and there is no "
            f"projection ({missing or 'the tier has no performance figures'})")


def _decode(r: Row, f: dict[str, Any], c: Criteria, why: str) -> Check:
    """Decode on the tier: measured on it, else the projection's pessimistic (low) end."""
    assert c.decode_tps_min is not None
    text_per_token = (f["decode_text_bps_mean"] / f["decode_tps_mean"]
                      if f["decode_text_bps_mean"] and f["decode_tps_mean"] else None)
    unit = "B/s" if c.speed_unit == "utf8_bytes" else "tok/s"
    if why:
        return Check("decode tok/s", "unmeasured", why)
    if speed_basis(r) == "measured":
        v = f["decode_text_bps_mean"] if unit == "B/s" else f["decode_tps_mean"]
        if v is None:
            return Check("decode tok/s", "unmeasured", f"no decode rate in {unit}")
        text = f"; {f['decode_text_bps_mean']:.0f} B/s of text" if unit == "tok/s" and text_per_token else ""
        return Check("decode tok/s", "pass" if v >= c.decode_tps_min else "fail",
                     f"{v:.1f} {unit} (>= {c.decode_tps_min:g}){text}")
    low, value, high = (projected(r, "decode_tps", e) for e in ("low", "value", "high"))
    if low is None or value is None:
        return Check("decode tok/s", "unmeasured", _not_on_tier(r, "decode_tps"))
    scale = 1.0
    if unit == "B/s":
        if text_per_token is None:
            return Check("decode tok/s", "unmeasured", "no text rate measured to carry onto the tier")
        scale = text_per_token
    span = f"{low * scale:.1f}-{high * scale:.1f}" if high is not None else f">= {low * scale:.1f}"
    return Check("decode tok/s", "pass" if low * scale >= c.decode_tps_min else "fail",
                 f"{low * scale:.1f} {unit} PROJECTED, pessimistic end of {span} (model {value * scale:.1f}; "
                 f">= {c.decode_tps_min:g}; {speed_basis(r)})")


def _ttft(r: Row, f: dict[str, Any], c: Criteria, why: str) -> Check:
    """TTFT on the tier: measured on it, else the projection's pessimistic (high) end."""
    assert c.ttft_s_max is not None
    if why:
        return Check("TTFT", "unmeasured", why)
    if r.config.prompt_tokens < c.ttft_min_prompt_tokens:
        return Check("TTFT", "unmeasured", f"prompt of {r.config.prompt_tokens} tokens, the claim needs "
                                           f">= {c.ttft_min_prompt_tokens}")
    if speed_basis(r) == "measured":
        v = f["ttft_s_mean"]
        if v is None:
            return Check("TTFT", "unmeasured", "no TTFT")
        return Check("TTFT", "pass" if v <= c.ttft_s_max else "fail",
                     f"{v:.2f} s at p={r.config.prompt_tokens} (<= {c.ttft_s_max:g})")
    low, value, high = (projected(r, "ttft_s", e) for e in ("low", "value", "high"))
    if high is None or value is None:
        return Check("TTFT", "unmeasured", _not_on_tier(r, "ttft_s"))
    return Check("TTFT", "pass" if high <= c.ttft_s_max else "fail",
                 f"{high:.2f} s PROJECTED at p={r.config.prompt_tokens}, pessimistic end of {low:.2f}-{high:.2f} "
                 f"(model {value:.2f}; <= {c.ttft_s_max:g}; {speed_basis(r)})")


def _kld(r: Row, f: dict[str, Any], c: Criteria, is_reference: bool) -> Check:
    if is_reference:
        return Check("KLD", "pass", "is the reference")
    if f["kld_mean"] is None and r.quality.ok and r.quality.perplexity is not None:
        return Check("KLD", "unmeasured", f"perplexity {r.quality.perplexity:.2f} only: "
                                          f"{r.quality.note or 'no reference variant'}")
    if f["kld_mean"] is None:
        return Check("KLD", "unmeasured",
                     r.quality.reason or r.quality.note or "no KLD in this row (run with --quality)")
    assert c.kld_max is not None
    return Check("KLD", "pass" if f["kld_mean"] <= c.kld_max else "fail", f"{f['kld_mean']:.4f} (<= {c.kld_max:g})")


def _accuracy(f: dict[str, Any], c: Criteria, is_reference: bool, ref: float | None, r: Row,
              use_published: bool = True) -> Check:
    acc = f["task_accuracy"]
    if is_reference:
        return Check("accuracy retained", "pass", "is the reference")
    if acc is None:
        return Check("accuracy retained", "unmeasured", "no task accuracy (run with --task)")
    if not ref:
        published = _vs_published(r, c) if use_published else None
        if published is not None:
            return published
        why = ("its published score is not used where the variant was measured against a reference" if not use_published
               else f"no published {r.task.id or r.task.name} score of the original in the catalog")
        return Check("accuracy retained", "unmeasured", f"{acc:.1%}; no reference-variant accuracy "
                                                        f"on the same task to compare with; {why}")
    assert c.accuracy_retained_min is not None
    kept = acc / ref
    return Check("accuracy retained", "pass" if kept >= c.accuracy_retained_min else "fail",
                 f"{kept:.1%} of {ref:.1%} (>= {c.accuracy_retained_min:.0%})")


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
    return Check("accuracy retained vs published", res.outcome, res.value)  # type: ignore[arg-type]


def serving_point(r: Row, users: int, serving: Sequence[ServingRecord]) -> ServingRecord | None:
    """The newest bench serve point at ``users`` concurrent users (closed loop) of the row's model,
    variant and tier; a point measured on the tier wins over one emulated on another host."""
    same = [p for p in serving if p.record == "point" and p.mode == "concurrency" and p.load_value == users
            and p.model_id == r.config.model_id and p.variant_id == r.config.variant_id
            and p.tier_label == r.tier_label]
    return max(same, key=lambda p: (p.measured, p.created_at)) if same else None


def serving_checks(r: Row, c: Criteria, serving: Sequence[ServingRecord]) -> list[Check]:
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
        return [Check(name, "unmeasured", why) for name in names]
    assert p is not None
    if p.status != "ok":  # requests failed under this load: users were not served
        return [Check(name, "fail", f"{p.status} at c={n}: {p.reason}") for name in names]
    checks = []
    if c.decode_tps_min is not None:
        checks.append(_serving_decode(p, c))
    if c.ttft_s_max is not None:
        checks.append(_serving_ttft(p, c))
    return checks


def _serving_decode(p: ServingRecord, c: Criteria) -> Check:
    from bench.analysis.serving import per_user_decode_tps

    name = f"decode tok/s @{c.concurrent_users} users"
    if c.speed_unit == "utf8_bytes":
        return Check(name, "unmeasured", "serving rows measure tokens, not bytes of text: speed_unit tokens")
    v = per_user_decode_tps(p)
    if v is None:
        return Check(name, "unmeasured", "no TPOT at this point")
    assert c.decode_tps_min is not None
    return Check(name, "pass" if v >= c.decode_tps_min else "fail",
                 f"{v:.1f} tok/s per user (1 / TPOT p50; >= {c.decode_tps_min:g}; {p.basis})")


def _serving_ttft(p: ServingRecord, c: Criteria) -> Check:
    from bench.analysis.serving import stat

    name = f"TTFT @{c.concurrent_users} users"
    ok = p.summary.get("ok") or 0
    prompt = (p.summary.get("prompt_tokens") or 0) / ok if ok else 0
    if prompt < c.ttft_min_prompt_tokens:
        return Check(name, "unmeasured", f"prompts of {prompt:.0f} tokens on average, the claim needs "
                                         f">= {c.ttft_min_prompt_tokens}")
    v = stat(p, "ttft_s", "p90")
    if v is None:
        return Check(name, "unmeasured", "no TTFT at this point")
    assert c.ttft_s_max is not None
    return Check(name, "pass" if v <= c.ttft_s_max else "fail",
                 f"{v:.2f} s p90 at p={prompt:.0f} (<= {c.ttft_s_max:g}; {p.basis})")


def configuration(r: Row) -> tuple:
    """A configuration is a variant on a backend with its settings, whatever the tier."""
    c = r.config
    return (c.model_id, c.variant_id, c.backend, repr(sorted(c.backend_options.items())))


def _has_quality(r: Row) -> bool:
    return bool(r.quality) or bool(r.task)


def check_row(r: Row, c: Criteria, refs: set[tuple[str, str]], ref_accuracy: dict[tuple, float],
              quality_from: Row | None = None, serving: Sequence[ServingRecord] = ()) -> RowVerdict:
    """Each criterion the claims set, on one row. Quality does not depend on the tier a
    configuration runs on (the same numbers are computed), so a row without quality takes it from
    ``quality_from``, a row of the same configuration that measured it, and says where."""
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
    # Quality retained: KLD and/or task accuracy, whichever the row measured; a measured failure
    # fails, a measured pass passes, nothing measured is `unmeasured`.
    is_reference = (r.config.model_id, r.config.variant_id) in refs
    q_row, where = r, ""
    if not _has_quality(r) and quality_from is not None:
        q_row, where = quality_from, f" (measured on {quality_from.tier_label})"
    qf = flatten(q_row)
    quality: list[Check] = []
    if c.kld_max is not None:
        quality.append(_kld(q_row, qf, c, is_reference))
    if c.accuracy_retained_min is not None:
        # A published score is used only where nothing was measured against the original itself.
        measured_vs_original = any(q.outcome != "unmeasured" for q in quality)
        quality.append(_accuracy(qf, c, is_reference, ref_accuracy.get(_task_key(q_row)), q_row,
                                 use_published=not measured_vs_original))
    if quality:
        outcomes = {q.outcome for q in quality}
        outcome: Outcome = "fail" if "fail" in outcomes else ("pass" if "pass" in outcomes else "unmeasured")
        checks.append(Check("quality retained", outcome,
                            "; ".join(f"{q.criterion} {q.outcome}: {q.value}" for q in quality) + where))
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
          serving: Sequence[ServingRecord] = ()) -> Verdict:
    """The verdict per model x tier. ``expected`` lists, per model, the tiers the verdict must
    cover as (tier, $/hour, why it may be missing): a tier with no row is shown as unmeasured.
    ``serving``: bench serve's records, read where the claims set ``concurrent_users``."""
    countries = catalog_countries or {}
    refs = reference_variants(list(rows))
    ref_accuracy: dict[tuple, float] = {}
    for r in rows:
        acc = flatten(r)["task_accuracy"]
        if acc is not None and (r.config.model_id, r.config.variant_id) in refs:
            ref_accuracy[_task_key(r)] = acc
    # A configuration (variant x backend x settings) passes a tier only if every workload measured
    # for it there passes (the newest row of each cell); the tier passes if one configuration does.
    groups: dict[tuple[str, str], dict[tuple, list[Row]]] = defaultdict(lambda: defaultdict(list))
    quality_of: dict[tuple, Row] = {}  # configuration -> its newest row that measured quality
    latest = latest_per_cell(list(rows))
    # A tier with rows measured on the tier itself (a fleet node that is the tier) is judged on those
    # alone: emulation answers "does it fit", only the tier answers "how fast".
    measured_tiers = {(r.config.model_id, tier_label(r)) for r in latest if basis_kind(r) == "measured"}
    position = {id(r): i for i, r in enumerate(rows)}
    for r in sorted(latest, key=lambda r: (r.created_at, position[id(r)])):  # newest last, as they were written
        if (r.config.model_id, tier_label(r)) in measured_tiers and basis_kind(r) != "measured":
            continue
        groups[(r.config.model_id, tier_label(r))][configuration(r)].append(r)
        if _has_quality(r) and r.status == "ok":
            quality_of[configuration(r)] = r
    order = {"pass": 0, "unmeasured": 1, "fail": 2}

    def rank(v: RowVerdict) -> tuple:
        return (order[v.outcome], sum(c.outcome == "fail" for c in v.checks), -(tier_decode_tps(v.row)[0] or 0))

    tiers = []
    for (model, tier), configs in sorted(groups.items()):
        deciding = [max((check_row(r, claims.criteria, refs, ref_accuracy, quality_of.get(key), serving) for r in rs),
                        key=rank)
                    for key, rs in configs.items()]  # each configuration's worst workload decides it
        best = min(deciding, key=rank)
        usd = hourly_usd(best.row)
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


# -- presentation -----------------------------------------------------------------------------
CRITERIA_ORDER = ("fits", "decode tok/s", "TTFT", "decode tok/s @N users", "TTFT @N users", "quality retained")
MARK = {"pass": "pass", "fail": "FAIL", "unmeasured": "unmeasured"}


def _by_country(v: Verdict) -> dict[str, list[TierVerdict]]:
    out: dict[str, list[TierVerdict]] = defaultdict(list)
    for tv in v.tiers:
        out[tv.country].append(tv)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "unknown", kv[0])))


def _criteria_in(v: Verdict) -> list[str]:
    seen = {c.criterion for tv in v.tiers if tv.best for c in tv.best.checks}
    users = v.claims.criteria.concurrent_users
    order = [c.replace("@N", f"@{users}") for c in CRITERIA_ORDER]
    return [c for c in order if c in seen]


def _cell(tv: TierVerdict, criterion: str) -> str:
    if tv.best is None:
        return "unmeasured"
    c = next((c for c in tv.best.checks if c.criterion == criterion), None)
    return "-" if c is None else f"{MARK[c.outcome]}: {c.value}"


def _claim_line(v: Verdict, model: str) -> str:
    tv = v.cheapest.get(model)
    if tv is None:
        passed = [t.tier for t in v.tiers if t.model == model and t.outcome == "pass"]
        return (f"{model}: passes on {', '.join(passed)} (no price, so no cheapest)" if passed else
                f"{model}: passes on none of the measured tiers")
    tag = "an inexpensive tier" if tv.inexpensive else "NOT an inexpensive tier by the claims file"
    return (f"{model}: cheapest passing tier {tv.tier} at ${tv.usd_per_hour:.3g}/h ({tag}; "
            f"{tv.configuration}; {tv.basis})")


def markdown(v: Verdict, sources: str) -> str:
    crit = _criteria_in(v)
    lines = [f"# Verdict: {v.claims.name}", "", f"From {sources}.", "",
             "A model passes a tier when one of its measured configurations there meets every criterion; "
             "`unmeasured` is never counted as a pass.", ""]
    for country, tvs in _by_country(v).items():
        lines += [f"## Models from {country}", "",
                  "| model | tier | $/h | inexpensive | configuration | " + " | ".join(crit) + " | verdict | basis |",
                  "|---|---|---|---|---|" + "---|" * len(crit) + "---|---|"]
        for tv in tvs:
            usd = "-" if tv.usd_per_hour is None else f"{tv.usd_per_hour:.3g}"
            lines.append(f"| {tv.model} | {tv.tier} | {usd} | {'yes' if tv.inexpensive else 'no'} | "
                         f"{tv.configuration} (best of {tv.configurations} configuration(s)) | "
                         + " | ".join(_cell(tv, c) for c in crit) + f" | **{MARK[tv.outcome]}** | {tv.basis} |")
        lines.append("")
    lines += ["## Cheapest passing tier", ""] + [f"- {_claim_line(v, m)}" for m in v.cheapest] + [""]
    return "\n".join(lines)


def rich_tables(v: Verdict) -> list:
    from rich.table import Table

    crit = _criteria_in(v)
    out = []
    for country, tvs in _by_country(v).items():
        t = Table(title=f"{v.claims.name}: models from {country}")
        for col in ("model", "tier", "$/h", "cheap", "configuration", *crit, "verdict", "basis"):
            t.add_column(col, overflow="fold")
        for tv in tvs:
            color = {"pass": "green", "fail": "red", "unmeasured": "yellow"}[tv.outcome]
            t.add_row(tv.model, tv.tier, "-" if tv.usd_per_hour is None else f"{tv.usd_per_hour:.3g}",
                      "yes" if tv.inexpensive else "no", tv.configuration,
                      *(_cell(tv, c) for c in crit), f"[{color}]{MARK[tv.outcome]}[/{color}]", tv.basis)
        out.append(t)
    return out


def claim_lines(v: Verdict) -> list[str]:
    return [_claim_line(v, m) for m in v.cheapest]
