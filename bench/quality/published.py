"""Quality retained against a published score: a variant measured here, its original release's score
as the developer published it (the catalog's ``published_scores``).

Used where the original release cannot be run here (only the hub serves it, or it is too big): the
measured KLD and the same-harness accuracy of the original, when they exist, win over it.

The published figure is over the whole benchmark; ours is over n items, so it carries sampling
error. The rule, with p the measured accuracy over n items, P the published one and m the claims'
``accuracy_retained_min``:

    upper = Wilson score upper bound of p at z = 1.96 (95%):
            (p + z^2/2n + z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    pass  when upper >= m * P: the measurement is consistent with keeping at least m of P;
    fail  when upper <  m * P: even its 95% upper bound falls short.

So a pass says "not shown to have lost more than 1 - m", a FAIL says "lost more, beyond sampling
error". It is labelled ``vs published``, with what differs between the two harnesses. A claims
file may say it only informs (``published_comparison: inform``): then it is shown and the criterion
stays ``unmeasured``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Z95 = 1.96


def wilson_upper(p: float, n: int, z: float = Z95) -> float:
    """The Wilson score interval's upper bound for a proportion p over n trials (formula above)."""
    if n <= 0:
        return 1.0
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


@dataclass(frozen=True)
class PublishedCheck:
    outcome: str  # pass | fail | unmeasured
    value: str  # what the verdict shows


def differences(published: Mapping[str, Any], measured: Mapping[str, Any]) -> list[str]:
    """What differs between the published measurement and ours, in words (always the harness;
    shots and the share of the benchmark where they differ)."""
    out = [f"different harness ({published.get('harness', 'unstated')})"]
    if measured.get("shots") is not None and published.get("shots") is not None \
            and measured["shots"] != published["shots"]:
        out.append(f"{published['shots']}-shot there, {measured['shots']}-shot here")
    if measured.get("metric") and published.get("metric") and measured["metric"] != published["metric"]:
        out.append(f"metric {published['metric']} there, {measured['metric']} here")
    return out


def compare_with_published(measured: Mapping[str, Any], published: Mapping[str, Any], min_ratio: float,
                           may_pass: bool = True) -> PublishedCheck:
    """The quality criterion from a measured task block ({accuracy, accuracy_se, items, correct,
    shots, metric, name}) and a published score ({value, task, shots, harness, source, ...}): pass
    when the measured accuracy's 95% Wilson upper bound reaches ``min_ratio`` x the published value,
    FAIL when it does not; ``unmeasured`` where no outcome of n items could fail (the upper bound
    at 0 correct already reaches it: a published score at the task's floor, or too few items)."""
    p, n, target = measured["accuracy"], measured["items"], published["value"]
    if not target:
        return PublishedCheck("unmeasured", f"the published {published['task']} score is 0: nothing to retain")
    floor = wilson_upper(0.0, n)
    if floor >= min_ratio * target:  # even no correct answer would pass: a check that cannot fail
        return PublishedCheck("unmeasured", f"{p:.1%} ({measured.get('correct')}/{n}) against {target:.1%} published: "
                                            f"with {n} items not even 0 correct could fail it (95% upper bound "
                                            f"{floor:.1%} >= {min_ratio:.0%} of {target:.1%}); the published score is "
                                            "too low to judge against at this size")
    upper = wilson_upper(p, n)
    ok = upper >= min_ratio * target
    value = (f"{p:.1%} ± {measured.get('accuracy_se') or 0:.1%} ({measured.get('correct')}/{n}) of "
             f"{target:.1%} published ({p / target:.0%}; 95% upper bound {upper / target:.0%} "
             f"{'>=' if ok else '<'} {min_ratio:.0%}), vs published: " + "; ".join(differences(published, measured))
             + f" [{published.get('source', 'source not named')}]")
    if not may_pass:
        return PublishedCheck("unmeasured", f"informs only (claims: published_comparison inform): {value}")
    return PublishedCheck("pass" if ok else "fail", value)


def published_for(facts: Mapping[str, Any] | None, task: str | None) -> Mapping[str, Any] | None:
    """The model's published score on ``task`` (from a row's catalog facts), if any."""
    if not facts or not task:
        return None
    return next((s for s in facts.get("published_scores") or [] if s.get("task") == task), None)
