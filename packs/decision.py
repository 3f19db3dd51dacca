"""The ``decision`` pack: multi-criteria ranking (weighted sum or TOPSIS) with a sensitivity analysis.

Guarantees (SPEC §5, so that results are reproducible):
- Price = floor = ``5_000 + 100 × options × criteria`` micros, whatever happens during execution.
- Weights are normalised to sum 1 (reported unrounded).
- ``weighted_sum``: each criterion is min–max scaled over the options (benefit ``(x−min)/(max−min)``,
  cost ``(max−x)/(max−min)``, every option 1 when max = min); score = Σ weight × scaled.
- ``topsis``: each column is divided by its Euclidean norm (an all-zero column stays 0), multiplied by
  its weight; ideal = best value per column (max for benefit, min for cost), anti-ideal = worst; score =
  d⁻ / (d⁺ + d⁻). When d⁺ = d⁻ = 0 (which happens for every option at once: all options identical on
  every weighted criterion) every score is 0.5, a tie resolved by input order.
- Scores are rounded to 6 decimals; the ranking sorts by rounded score, ties by option order in the
  input; ranks are 1..n, rank 1 is the winner.
- Sensitivity, per criterion k: the signed change Δ of k's normalised weight w_k (the others rescaled
  proportionally so the sum stays 1) closest to 0 such that at weight w_k + Δ ∈ [0, 1] another option
  beats the winner — it scores more, or the same while listed earlier. It is solved on unrounded scores
  and reported rounded to 6 decimals; when the challenger would win only strictly past a point, that
  point (the infimum) is reported. ``null`` when no weight in [0, 1] changes the winner, and for a
  single criterion. ``0.0`` means the winner is already tied with an option that any move one way
  lets through. Equal distances up and down report the increase.
  ``weighted_sum`` is computed in exact rational arithmetic (every JSON number is a binary fraction, taken as
  it is), scores and crossings alike, and rounded half to even only at the end: an exact result halfway
  between two 6-decimal values is reported the same on every machine. Its scores are linear in the weight:
  each crossing is solved exactly.
  ``topsis`` scores are not: the winner is scanned on a grid of step 1/1000 outwards from w_k, and the
  first change is located by bisection to 1e-12; a flip window narrower than the grid step can be missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from dpp.money import format_usd
from packs.base import FieldError, Pack, PackContext, PackResult, UrlPolicy, inputs_schema

METHODS = ("weighted_sum", "topsis")
BASE_MICROS = 5_000
PER_CELL_MICROS = 100
_SCORE_LIMIT = 10**15  # keeps squares and ranges far from float overflow
_WEIGHT_LIMIT = 10**6
_NAME_MAX = 200
_SCAN_STEPS = 1000
_BISECT_TOLERANCE = 1e-12

INPUT_SCHEMA = inputs_schema(
    {
        "question": {"type": "string", "minLength": 1, "maxLength": 2000},
        "options": {
            "type": "array",
            "minItems": 2,
            "maxItems": 50,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": _NAME_MAX},
        },
        "criteria": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "weight", "direction"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": _NAME_MAX},
                    "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": _WEIGHT_LIMIT},
                    "direction": {"enum": ["benefit", "cost"]},
                },
            },
        },
        "scores": {
            "description": "option -> criterion -> number; every option x criterion, nothing else",
            "type": "object",
            "maxProperties": 50,
            "additionalProperties": {
                "type": "object",
                "maxProperties": 20,
                "additionalProperties": {
                    "type": "number",
                    "minimum": -_SCORE_LIMIT,
                    "maximum": _SCORE_LIMIT,
                },
            },
        },
        "method": {"enum": list(METHODS), "default": "weighted_sum"},
    },
    required=["question", "options", "criteria", "scores"],
)


@dataclass(frozen=True)
class Problem:
    """Valid inputs in positional form: ``matrix[option][criterion]``."""

    options: list[str]
    criteria: list[str]
    benefit: list[bool]
    raw_weights: list[float]
    matrix: list[list[float]]

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> Problem:
        criteria = inputs["criteria"]
        names = [c["name"] for c in criteria]
        return cls(
            options=list(inputs["options"]),
            criteria=names,
            benefit=[c["direction"] == "benefit" for c in criteria],
            raw_weights=[float(c["weight"]) for c in criteria],
            matrix=[[float(inputs["scores"][o][n]) for n in names] for o in inputs["options"]],
        )


class DecisionPack(Pack):
    pack_type: ClassVar[str] = "decision"
    version: ClassVar[str] = "1.0.0"
    description: ClassVar[str] = (
        "Rank options against weighted criteria (weighted sum or TOPSIS), with the winner and, per "
        "criterion, the smallest weight change that would change it."
    )
    input_schema: ClassVar[dict[str, Any]] = INPUT_SCHEMA

    def semantic_errors(self, inputs: dict[str, Any], *, policy: UrlPolicy) -> list[FieldError]:
        return _criteria_errors(inputs["criteria"]) + _score_errors(inputs)

    def price_floor_micros(self, inputs: dict[str, Any]) -> int:
        return BASE_MICROS + PER_CELL_MICROS * len(inputs["options"]) * len(inputs["criteria"])

    def price_ceiling_micros(self, inputs: dict[str, Any]) -> int:
        return self.price_floor_micros(inputs)  # the exact price, whatever happens during execution

    def pricing(self) -> dict[str, Any]:
        return {
            "model": "per_cell",
            "formula": "0.0050 + 0.0001 × options × criteria",
            "base_usd": format_usd(BASE_MICROS),
            "per_cell_usd": format_usd(PER_CELL_MICROS),
        }

    def execute(self, inputs: dict[str, Any], context: PackContext) -> PackResult:
        self.require_valid(inputs, policy=context.url_policy)
        data = decide(Problem.from_inputs(inputs), inputs.get("method", "weighted_sum"), context.check)
        return PackResult(data=data, cost_micros=self.price_floor_micros(inputs))


def decide(problem: Problem, method: str, check: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The pack's output ``data`` for a valid problem; ``check`` is called between criteria."""
    weights = normalised_weights(problem.raw_weights)
    scores = SCORERS[method](problem, weights)
    ranking = rank(problem.options, scores)
    winner = problem.options.index(ranking[0]["option"])
    sensitivity = []
    for k, name in enumerate(problem.criteria):
        check()
        change = SENSITIVITIES[method](problem, k, winner)
        sensitivity.append({"criterion": name, "weight_change_to_flip": _round6(change)})
    return {
        "winner": problem.options[winner],
        "method": method,
        "ranking": ranking,
        "weights": {name: float(w) for name, w in zip(problem.criteria, weights, strict=True)},
        "sensitivity": sensitivity,
    }


def normalised_weights(raw: Sequence[float]) -> list[Fraction]:
    """Each weight over their sum, exactly."""
    exact = [Fraction(w) for w in raw]
    total = sum(exact, Fraction(0))
    return [w / total for w in exact]


def rank(options: Sequence[str], scores: Sequence[float | Fraction]) -> list[dict[str, Any]]:
    """Rows sorted by rounded score, descending; equal rounded scores keep input order."""
    rounded = [_to6(s) for s in scores]
    order = sorted(range(len(options)), key=lambda i: (-rounded[i], i))
    return [{"option": options[i], "score": rounded[i], "rank": r} for r, i in enumerate(order, start=1)]


def _to6(value: float | Fraction) -> float:
    """Rounded to 6 decimals, half to even; a Fraction exactly (a float: as the binary value it is)."""
    return float(round(value, 6)) if isinstance(value, Fraction) else round(value, 6)


def _round6(value: float | Fraction | None) -> float | None:
    # + 0.0 turns -0.0 into 0.0 so the JSON never says "-0.0".
    return None if value is None else _to6(value) + 0.0


# --- weighted sum -------------------------------------------------------------------------------


def min_max_scaled(problem: Problem) -> list[list[Fraction]]:
    """``scaled[option][criterion]`` in [0, 1], 1 = best; a criterion without range gives 1 to all. Exact."""
    columns = []
    for j, benefit in enumerate(problem.benefit):
        column = [Fraction(row[j]) for row in problem.matrix]
        low, high = min(column), max(column)
        if high == low:
            columns.append([Fraction(1)] * len(column))
        elif benefit:
            columns.append([(x - low) / (high - low) for x in column])
        else:
            columns.append([(high - x) / (high - low) for x in column])
    return [list(row) for row in zip(*columns, strict=True)]


def _dot(weights: Sequence[Fraction], values: Sequence[Fraction]) -> Fraction:
    return sum((w * v for w, v in zip(weights, values, strict=True)), Fraction(0))


def weighted_sum_scores(problem: Problem, weights: Sequence[float | Fraction]) -> list[Fraction]:
    exact = [Fraction(w) for w in weights]
    return [_dot(exact, row) for row in min_max_scaled(problem)]


def weighted_sum_sensitivity(problem: Problem, k: int, winner: int) -> Fraction | None:
    """Exact: score_i(t) = t·a_i + (1−t)·b_i, so each challenger crosses the winner at most once."""
    if len(problem.criteria) == 1:
        return None
    scaled = min_max_scaled(problem)
    w_k = normalised_weights(problem.raw_weights)[k]
    rest = [Fraction(w) if j != k else Fraction(0) for j, w in enumerate(problem.raw_weights)]
    rest_total = sum(rest, Fraction(0))
    a = [row[k] for row in scaled]
    b = [_dot(rest, row) / rest_total for row in scaled]
    changes = []
    for i in range(len(problem.options)):
        if i != winner:
            # challenger − winner = beta + slope·t
            beta, slope = b[i] - b[winner], (a[i] - a[winner]) - (b[i] - b[winner])
            t = _linear_flip(beta, slope, w_k, listed_before=i < winner)
            if t is not None:
                changes.append(t - w_k)
    return _closest(changes)


def _linear_flip(beta: Fraction, slope: Fraction, w_k: Fraction, *, listed_before: bool) -> Fraction | None:
    """The t in [0, 1] nearest w_k where ``beta + slope·t`` lets the challenger win, or None.

    It wins where the difference is > 0, or = 0 when it is listed before the winner; for a challenger
    listed after, the boundary point itself is only the infimum (and at 0 or 1 it is out of reach).
    """
    if slope == 0:
        return w_k if beta > 0 or (beta == 0 and listed_before) else None
    crossing = -beta / slope
    if (slope > 0 and crossing <= w_k) or (slope < 0 and crossing >= w_k):
        return w_k  # already winning (or tied) on the side it wins
    if 0.0 < crossing < 1.0 or (crossing in (0.0, 1.0) and listed_before):
        return crossing
    return None


def _closest[T: (float, Fraction)](changes: Sequence[T]) -> T | None:
    """The smallest |change|; an increase wins a tie with a decrease of the same size."""
    return min(changes, key=lambda c: (abs(c), c < 0)) if changes else None


# --- TOPSIS -------------------------------------------------------------------------------------


def _gaps(problem: Problem) -> tuple[list[list[float]], list[list[float]]]:
    """Per option and criterion, the unweighted distance to the ideal and to the anti-ideal.

    Weights are > 0, so the ideal of a weighted column is the weight times the ideal of the column:
    v − v* = w·(r − r*). That lets the sensitivity scan re-weight without recomputing the matrix. And since the
    column's norm is > 0 too, r − r* = (x − x*) / norm: the difference is taken on the scores as given, before
    dividing. Taken after it, scores of 10^12 that differ by 1 lost their difference to rounding (it changed
    the 5th decimal, and the winner).
    """
    plus: list[list[float]] = [[] for _ in problem.matrix]
    minus: list[list[float]] = [[] for _ in problem.matrix]
    for j, benefit in enumerate(problem.benefit):
        column = [row[j] for row in problem.matrix]
        norm = math.sqrt(math.fsum(x * x for x in column))  # 0 for an all-zero column, which stays 0
        best, worst = (max(column), min(column)) if benefit else (min(column), max(column))
        for i, x in enumerate(column):
            plus[i].append((x - best) / norm if norm else 0.0)
            minus[i].append((x - worst) / norm if norm else 0.0)
    return plus, minus


def _closeness(d_plus: float, d_minus: float) -> float:
    total = d_plus + d_minus
    return d_minus / total if total else 0.5


def topsis_scores(problem: Problem, weights: Sequence[float | Fraction]) -> list[float]:
    plus, minus = _gaps(problem)

    def distance(gaps: Sequence[float]) -> float:
        return math.sqrt(math.fsum((float(w) * g) ** 2 for w, g in zip(weights, gaps, strict=True)))

    return [_closeness(distance(p), distance(m)) for p, m in zip(plus, minus, strict=True)]


def topsis_sensitivity(problem: Problem, k: int, winner: int) -> float | None:
    """Numerical: a scan of step 1/1000 outwards from w_k, then bisection to 1e-12 (see module doc)."""
    if len(problem.criteria) == 1:
        return None
    winner_at = _topsis_winner_function(problem, k)
    w_k = float(normalised_weights(problem.raw_weights)[k])
    if winner_at(w_k) != winner:
        return 0.0  # tied at 6 decimals and behind on unrounded scores: already on the edge
    up = [j / _SCAN_STEPS for j in range(_SCAN_STEPS + 1) if j / _SCAN_STEPS > w_k]
    down = [j / _SCAN_STEPS for j in range(_SCAN_STEPS, -1, -1) if j / _SCAN_STEPS < w_k]
    changes = []
    for grid in (up, down):
        flip = _first_flip(winner_at, winner, w_k, grid)
        if flip is not None:
            changes.append(flip - w_k)
    return _closest(changes)


def _topsis_winner_function(problem: Problem, k: int) -> Callable[[float], int]:
    """winner(t) when criterion k weighs t and the others share 1 − t in their original proportions.

    d²(t) = t²·G + (1−t)²·H per option, with G from criterion k and H from the others, so one
    evaluation costs O(options) instead of O(options × criteria).
    """
    rest_total = math.fsum(w for j, w in enumerate(problem.raw_weights) if j != k)
    share = [w / rest_total for w in problem.raw_weights]
    terms = []
    for p, m in zip(*_gaps(problem), strict=True):
        terms.append(
            (
                p[k] ** 2,
                math.fsum((share[j] * g) ** 2 for j, g in enumerate(p) if j != k),
                m[k] ** 2,
                math.fsum((share[j] * g) ** 2 for j, g in enumerate(m) if j != k),
            )
        )

    def winner_at(t: float) -> int:
        t2, u2 = t * t, (1.0 - t) ** 2
        best, best_score = 0, -1.0
        for i, (gp, hp, gm, hm) in enumerate(terms):
            score = _closeness(math.sqrt(t2 * gp + u2 * hp), math.sqrt(t2 * gm + u2 * hm))
            if score > best_score:  # strict: an equal score keeps the option listed first
                best, best_score = i, score
        return best

    return winner_at


def _first_flip(winner_at: Callable[[float], int], winner: int, start: float, grid: Sequence[float]) -> float | None:
    """The first grid point (walking away from ``start``) with another winner, refined by bisection."""
    kept = start
    for t in grid:
        if winner_at(t) != winner:
            return _bisect(winner_at, winner, kept, t)
        kept = t
    return None


def _bisect(winner_at: Callable[[float], int], winner: int, kept: float, changed: float) -> float:
    """Narrow [kept, changed] (the winner holds at ``kept``, not at ``changed``) to the boundary."""
    for _ in range(100):
        if abs(changed - kept) <= _BISECT_TOLERANCE:
            break
        middle = (kept + changed) / 2
        if winner_at(middle) == winner:
            kept = middle
        else:
            changed = middle
    return changed


# --- validation ---------------------------------------------------------------------------------


def _criteria_errors(criteria: list[dict[str, Any]]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, criterion in enumerate(criteria):
        if criterion["name"] in seen:
            errors.append(FieldError(f"inputs.criteria[{i}].name", "duplicate criterion name"))
        seen.add(criterion["name"])
        if not math.isfinite(criterion["weight"]):
            errors.append(FieldError(f"inputs.criteria[{i}].weight", "must be a finite number"))
    return errors


def _score_errors(inputs: dict[str, Any]) -> list[FieldError]:
    """Every option × criterion present and finite, nothing else."""
    options, scores = inputs["options"], inputs["scores"]
    names = [c["name"] for c in inputs["criteria"]]
    errors = [FieldError(f"inputs.scores.{o}", "not an option") for o in scores if o not in options]
    for option in options:
        row = scores.get(option)
        if row is None:
            errors.append(FieldError(f"inputs.scores.{option}", "missing: every option needs a score"))
            continue
        errors += [FieldError(f"inputs.scores.{option}.{c}", "not a criterion") for c in row if c not in names]
        for name in names:
            if name not in row:
                errors.append(FieldError(f"inputs.scores.{option}.{name}", "missing score"))
            elif not math.isfinite(row[name]):
                errors.append(FieldError(f"inputs.scores.{option}.{name}", "must be a finite number"))
    return errors


SCORERS: dict[str, Callable[[Problem, Sequence[Fraction]], Sequence[float | Fraction]]] = {
    "weighted_sum": weighted_sum_scores,
    "topsis": topsis_scores,
}
SENSITIVITIES: dict[str, Callable[[Problem, int, int], float | Fraction | None]] = {
    "weighted_sum": weighted_sum_sensitivity,
    "topsis": topsis_sensitivity,
}
