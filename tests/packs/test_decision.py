"""The decision pack: worked examples computed by hand, validation, price, and properties."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from packs.base import FieldError, PackError, PackInterrupted
from packs.decision import DecisionPack, Problem, topsis_scores, weighted_sum_scores
from tests.helpers.packs import POLICY, make_context

PACK = DecisionPack()


def inputs(
    options: list[str],
    criteria: Sequence[tuple[str, float, str]],
    scores: Mapping[str, Sequence[float]],
    method: str | None = None,
) -> dict[str, Any]:
    """Build inputs from compact rows: ``scores[option]`` lists values in criteria order."""
    names = [name for name, _, _ in criteria]
    built: dict[str, Any] = {
        "question": "Which one?",
        "options": options,
        "criteria": [{"name": n, "weight": w, "direction": d} for n, w, d in criteria],
        "scores": {o: dict(zip(names, scores[o], strict=True)) for o in options},
    }
    if method is not None:
        built["method"] = method
    return built


def decide(data: dict[str, Any]) -> dict[str, Any]:
    assert PACK.validate(data, policy=POLICY) == []
    result = PACK.execute(data, make_context())
    assert result.cost_micros == 5_000 + 100 * len(data["options"]) * len(data["criteria"])
    return result.data


def sensitivity(data: dict[str, Any]) -> list[float | None]:
    return [row["weight_change_to_flip"] for row in data["sensitivity"]]


# --- weighted sum, by hand ----------------------------------------------------------------------------

# price (cost, weight 1), quality (benefit, weight 3): normalised 1/4 = 0.25 and 3/4 = 0.75.
LAPTOPS = inputs(
    ["A", "B", "C"],
    [("price", 1, "cost"), ("quality", 3, "benefit")],
    {"A": [100, 6], "B": [200, 9], "C": [150, 3]},
)


def test_weighted_sum_worked_example() -> None:
    # price: min 100, max 200, cost -> (200 − x) / 100:   A 1.0   B 0.0   C 0.5
    # quality: min 3, max 9, benefit -> (x − 3) / 6:        A 0.5   B 1.0   C 0.0
    # A = 0.25·1.0 + 0.75·0.5 = 0.625;  B = 0.25·0 + 0.75·1 = 0.75;  C = 0.25·0.5 + 0 = 0.125
    data = decide(LAPTOPS)

    assert data["winner"] == "B"
    assert data["method"] == "weighted_sum"  # the default
    assert data["ranking"] == [
        {"option": "B", "score": 0.75, "rank": 1},
        {"option": "A", "score": 0.625, "rank": 2},
        {"option": "C", "score": 0.125, "rank": 3},
    ]
    assert data["weights"] == {"price": 0.25, "quality": 0.75}
    assert set(data) == {"winner", "method", "ranking", "weights", "sensitivity"}


def test_weighted_sum_sensitivity_worked_example_positive_and_negative() -> None:
    # price gets weight t, quality 1 − t:  A(t) = t·1 + (1−t)·0.5 = 0.5 + 0.5t;  B(t) = 1 − t;  C(t) = 0.5t
    #   A = B at 0.5 + 0.5t = 1 − t -> t = 1/3; A is listed before B so it wins the tie there.
    #   C = B at 0.5t = 1 − t -> t = 2/3.  Below 0.25 B only gains. Nearest: 1/3 − 1/4 = +1/12 = 0.083333
    # quality gets t, price 1 − t:  A(t) = 0.5t + (1−t) = 1 − 0.5t;  B(t) = t;  C(t) = 0.5(1−t)
    #   A = B at t = 2/3 -> 2/3 − 3/4 = −1/12;  C = B at t = 1/3 -> −5/12.  Nearest: −0.083333
    data = decide(LAPTOPS)

    assert data["sensitivity"] == [
        {"criterion": "price", "weight_change_to_flip": 0.083333},
        {"criterion": "quality", "weight_change_to_flip": -0.083333},
    ]


def test_weighted_sum_sensitivity_rescales_the_other_criteria_and_can_be_null() -> None:
    # weights 2, 3, 5 -> 0.2, 0.3, 0.5.  Scaled: a: X 1, Y 0;  b: X 0, Y 1;  c (cost, 50..100): X 0, Y 1.
    # X = 0.2·1 = 0.2;  Y = 0.3 + 0.5 = 0.8 -> Y wins.
    # a at t, b and c share 1 − t as 3:5:  X(t) = t;  Y(t) = (1−t)(3/8 + 5/8) = 1 − t -> tie at 0.5,
    #   X is listed first so it wins there: 0.5 − 0.2 = +0.3
    # b at t, a and c share 1 − t as 2:5:  X − Y = 2/7(1−t) − t − 5/7(1−t) = −3/7(1−t) − t < 0 on [0, 1]: null
    # c at t, a and b share 1 − t as 2:3:  X − Y = 0.4(1−t) − 0.6(1−t) − t < 0 on [0, 1]: null
    data = decide(
        inputs(
            ["X", "Y"],
            [("a", 2, "benefit"), ("b", 3, "benefit"), ("c", 5, "cost")],
            {"X": [10, 0, 100], "Y": [0, 10, 50]},
        )
    )

    assert [(row["option"], row["score"]) for row in data["ranking"]] == [("Y", 0.8), ("X", 0.2)]
    assert data["weights"] == pytest.approx({"a": 0.2, "b": 0.3, "c": 0.5}, abs=1e-15)
    assert sensitivity(data) == [0.3, None, None]


def test_ties_rank_by_input_order() -> None:
    # One criterion, min 1 max 5: X and Y scale to 1.0, Z to 0.0. X and Y tie: input order decides.
    rows = {"X": [5], "Y": [5], "Z": [1]}
    forward = decide(inputs(["X", "Y", "Z"], [("q", 1, "benefit")], rows))
    backward = decide(inputs(["Y", "X", "Z"], [("q", 1, "benefit")], rows))

    assert [(r["option"], r["score"], r["rank"]) for r in forward["ranking"]] == [
        ("X", 1.0, 1),
        ("Y", 1.0, 2),
        ("Z", 0.0, 3),
    ]
    assert (forward["winner"], backward["winner"]) == ("X", "Y")
    assert sensitivity(forward) == [None]  # a single criterion has nothing to trade against


def test_a_tied_winner_flips_with_any_move_so_its_sensitivity_is_zero() -> None:
    # A = (1, 0), B = (0, 1) scaled, weights 1:1 -> both 0.5; A wins by order.
    # c1 at t: A(t) = t, B(t) = 1 − t: B leads for every t < 0.5, so the smallest change is 0 (an infimum).
    data = decide(inputs(["A", "B"], [("c1", 1, "benefit"), ("c2", 1, "benefit")], {"A": [1, 0], "B": [0, 1]}))

    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("A", 0.5), ("B", 0.5)]
    assert sensitivity(data) == [0.0, 0.0]


def test_a_criterion_without_range_scores_one_for_everyone() -> None:
    # c: A 3, B 1 -> A 1, B 0.  flat: all 7 -> max = min -> every option 1.
    # A = 0.5·1 + 0.5·1 = 1.0;  B = 0.5·0 + 0.5·1 = 0.5
    # flat at t: A(t) = 1, B(t) = t -> B only ties A at t = 1, and A is listed first: null
    # c at t:    A(t) = 1, B(t) = 1 − t -> B only ties at t = 0: null
    data = decide(inputs(["A", "B"], [("c", 1, "benefit"), ("flat", 1, "cost")], {"A": [3, 7], "B": [1, 7]}))

    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("A", 1.0), ("B", 0.5)]
    assert sensitivity(data) == [None, None]


def test_a_tie_at_the_edge_of_the_weight_range_counts_for_an_option_listed_first() -> None:
    # The same numbers with B listed first: B wins the ties at t = 1 (flat) and t = 0 (c).
    # c: 0 − 0.5 = −0.5;  flat: 1 − 0.5 = +0.5
    data = decide(inputs(["B", "A"], [("c", 1, "benefit"), ("flat", 1, "cost")], {"A": [3, 7], "B": [1, 7]}))

    assert data["winner"] == "A"
    assert sensitivity(data) == [-0.5, 0.5]


def test_weighted_sum_halfway_between_two_6_decimal_values_rounds_half_to_even() -> None:
    # Weights 9:4:7 -> 0.45, 0.2, 0.35. o0 leads; o1 passes it once c2's weight falls by exactly 39/640 =
    # 0.0609375, halfway between 0.060937 and 0.060938: exact arithmetic and half to even give -0.060938
    # (floats landed just below the halfway point and gave -0.060937).
    data = decide(
        inputs(
            ["o0", "o1", "o2", "o3"],
            [("c0", 9, "cost"), ("c1", 4, "benefit"), ("c2", 7, "benefit")],
            {"o0": [3, 2, 8], "o1": [2, 7, 4], "o2": [4, 6, 5], "o3": [9, 4, 4]},
        )
    )

    assert data["winner"] == "o0"
    assert sensitivity(data)[2] == -0.060938
    assert data["weights"] == {"c0": 0.45, "c1": 0.2, "c2": 0.35}


def test_weighted_sum_scores_are_exact_for_weights_no_float_holds() -> None:
    # Weights 1:1:1 are 1/3 each; A is best on two criteria of three: exactly 2/3 -> 0.666667, B 1/3 -> 0.333333.
    data = decide(
        inputs(
            ["A", "B"], [("x", 1, "benefit"), ("y", 1, "benefit"), ("z", 1, "cost")], {"A": [2, 2, 2], "B": [1, 1, 1]}
        )
    )

    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("A", 0.666667), ("B", 0.333333)]


# --- TOPSIS, by hand ------------------------------------------------------------------------------------


def test_topsis_worked_example() -> None:
    # reach (benefit) and risk (cost), weights 1:1 -> 0.5 each.
    # norms: reach sqrt(3² + 4² + 0²) = 5;  risk sqrt(4² + 0² + 3²) = 5
    # r: A (0.6, 0.8)  B (0.8, 0.0)  C (0.0, 0.6);  v = 0.5·r: A (0.3, 0.4)  B (0.4, 0.0)  C (0.0, 0.3)
    # ideal (max reach, min risk) = (0.4, 0.0);  anti-ideal = (0.0, 0.4)
    # A: d+ = sqrt(0.1² + 0.4²) = sqrt(0.17) = 0.412311;  d− = sqrt(0.3² + 0²) = 0.3
    #    score = 0.3 / 0.712311 = 0.421165
    # B: d+ = 0;  d− = sqrt(0.4² + 0.4²) = 0.565685;  score = 1
    # C: d+ = sqrt(0.4² + 0.3²) = 0.5;  d− = sqrt(0² + 0.1²) = 0.1;  score = 0.1 / 0.6 = 0.166667
    # Sensitivity: B is the ideal on both criteria (d+ = 0 at every weight, d− > 0), so it scores 1 for
    # any t; A or C would need d+ = 0, i.e. the best value on every weighted criterion: never. null, null.
    data = decide(
        inputs(
            ["A", "B", "C"],
            [("reach", 1, "benefit"), ("risk", 1, "cost")],
            {"A": [3, 4], "B": [4, 0], "C": [0, 3]},
            method="topsis",
        )
    )

    assert data["method"] == "topsis"
    assert data["ranking"] == [
        {"option": "B", "score": 1.0, "rank": 1},
        {"option": "A", "score": 0.421165, "rank": 2},
        {"option": "C", "score": 0.166667, "rank": 3},
    ]
    assert data["weights"] == {"reach": 0.5, "risk": 0.5}
    assert sensitivity(data) == [None, None]


def test_topsis_sensitivity_worked_example() -> None:
    # A = (2, 1), B = (1, 2), both benefit, weights 3:1 -> 0.75, 0.25. Both norms are sqrt(5).
    # With weights (t, 1 − t): ideal = (2t, 2(1−t))/sqrt5, anti-ideal = (t, 1−t)/sqrt5
    #   A: d+ = (1−t)/sqrt5, d− = t/sqrt5 -> score t;   B: d+ = t/sqrt5, d− = (1−t)/sqrt5 -> score 1 − t
    # At t = 0.75: A 0.75, B 0.25. B (listed after A) leads once t < 0.5: c1 change 0.5 − 0.75 = −0.25.
    # Symmetrically c2 (weight 0.25) must pass 0.5: +0.25. Found by scan + bisection, exact to 6 decimals.
    data = decide(
        inputs(["A", "B"], [("c1", 3, "benefit"), ("c2", 1, "benefit")], {"A": [2, 1], "B": [1, 2]}, "topsis")
    )

    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("A", 0.75), ("B", 0.25)]
    assert sensitivity(data) == [-0.25, 0.25]


def test_topsis_keeps_small_differences_between_large_scores() -> None:
    # Scores of 10^12 that differ by 1 or 2. Exactly (computed with fractions and 50-digit roots):
    # A 0.49999999999967, B 0.50000000000033, C 0.30901699437518 -> A and B tie at 6 decimals, A is listed first.
    # Subtracting after normalising gave B 0.500024, A 0.499976: another winner.
    data = decide(
        inputs(
            ["A", "B", "C"],
            [("a", 2, "benefit"), ("b", 1, "benefit")],
            {"A": [10**12 + 3, 10**12], "B": [10**12 + 2, 10**12 + 2], "C": [10**12 + 2, 10**12 + 1]},
            "topsis",
        )
    )

    assert data["winner"] == "A"
    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("A", 0.5), ("B", 0.5), ("C", 0.309017)]


def test_topsis_winner_among_scores_near_the_largest_accepted() -> None:
    # Exactly: o3 0.612574, o0 0.6, o1 0.4, o2 0 (o0 won with 0.613636 when the difference came after the norm).
    big = 10**15
    data = decide(
        inputs(
            ["o0", "o1", "o2", "o3"],
            [("a", 5, "benefit"), ("b", 5, "cost")],
            {"o0": [big, big - 1], "o1": [big - 3, big - 3], "o2": [big - 3, big - 1], "o3": [big - 1, big - 2]},
            "topsis",
        )
    )

    assert data["winner"] == "o3"
    assert [(r["option"], r["score"]) for r in data["ranking"]] == [
        ("o3", 0.612574),
        ("o0", 0.6),
        ("o1", 0.4),
        ("o2", 0.0),
    ]


def test_topsis_identical_options_score_one_half() -> None:
    # Every column is constant: ideal = anti-ideal, so d+ = d− = 0 for all: defined as 0.5 (a tie).
    data = decide(inputs(["P", "Q"], [("a", 1, "benefit"), ("b", 2, "cost")], {"P": [2, 3], "Q": [2, 3]}, "topsis"))

    assert [(r["option"], r["score"], r["rank"]) for r in data["ranking"]] == [("P", 0.5, 1), ("Q", 0.5, 2)]
    assert sensitivity(data) == [None, None]  # identical options can never overtake one another


def test_topsis_an_all_zero_column_stays_zero() -> None:
    # c1 is 0 for everyone: its norm is 0 and it stays 0, so only c2 separates: r2 = (1, 2)/sqrt5.
    # A: d+ = 0.5·(1/sqrt5), d− = 0 -> 0;   B: d+ = 0, d− = 0.5·(1/sqrt5) -> 1
    # c1 at t = 1 takes all the weight: every option is then at both ideals (0/0 -> 0.5), A wins the tie
    # by order: +0.5. c2 at t = 0 is the same situation: −0.5.
    data = decide(
        inputs(["A", "B"], [("c1", 1, "benefit"), ("c2", 1, "benefit")], {"A": [0, 1], "B": [0, 2]}, "topsis")
    )

    assert [(r["option"], r["score"]) for r in data["ranking"]] == [("B", 1.0), ("A", 0.0)]
    assert sensitivity(data) == [0.5, -0.5]


# --- price, catalog, contract ---------------------------------------------------------------------------


def test_price_is_the_floor_and_the_cost() -> None:
    # 5_000 + 100 × 3 options × 2 criteria = 5_600
    assert PACK.price_floor_micros(LAPTOPS) == 5_600
    assert PACK.execute(LAPTOPS, make_context()).cost_micros == 5_600


def test_largest_problem_price() -> None:
    assert PACK.price_floor_micros({"options": ["o"] * 50, "criteria": [{}] * 20}) == 105_000


def test_pricing_and_schema() -> None:
    Draft202012Validator.check_schema(PACK.input_schema)
    assert PACK.pricing() == {
        "model": "per_cell",
        "formula": "0.0050 + 0.0001 × options × criteria",
        "base_usd": "0.0050",
        "per_cell_usd": "0.0001",
    }
    assert (PACK.pack_type, PACK.max_timebox_sec) == ("decision", 90)


def test_execute_refuses_invalid_inputs() -> None:
    broken = {**LAPTOPS, "method": "vibes"}

    with pytest.raises(PackError) as raised:
        PACK.execute(broken, make_context())

    assert raised.value.reason_code == "PACK_FAILED"
    assert "inputs.method" in raised.value.detail


def test_execute_stops_when_the_run_is_canceled() -> None:
    with pytest.raises(PackInterrupted):
        PACK.execute(LAPTOPS, make_context(should_stop=lambda: True))


# --- validation -----------------------------------------------------------------------------------------


def mutated(**changes: Any) -> dict[str, Any]:
    return {**LAPTOPS, **changes}


def without_score(option: str, criterion: str) -> dict[str, Any]:
    scores = {o: dict(row) for o, row in LAPTOPS["scores"].items()}
    del scores[option][criterion]
    return mutated(scores=scores)


FIFTY_ONE = [f"o{i}" for i in range(51)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (without_score("B", "price"), [("inputs.scores.B.price", "missing score")]),
        (
            mutated(scores={"A": LAPTOPS["scores"]["A"], "B": LAPTOPS["scores"]["B"]}),
            [("inputs.scores.C", "missing: every option needs a score")],
        ),
        (
            mutated(scores={**LAPTOPS["scores"], "D": {"price": 1, "quality": 1}}),
            [("inputs.scores.D", "not an option")],
        ),
        (
            mutated(scores={**LAPTOPS["scores"], "A": {"price": 1, "quality": 1, "looks": 2}}),
            [("inputs.scores.A.looks", "not a criterion")],
        ),
        (mutated(options=["A", "B", "A"]), [("inputs.options", "must not contain duplicates")]),
        (mutated(options=["A"]), [("inputs.options", "must have at least 2 items")]),
        (
            mutated(options=FIFTY_ONE, scores={o: {"price": 1, "quality": 1} for o in FIFTY_ONE}),
            [("inputs.options", "must have at most 50 items"), ("inputs.scores", "must have at most 50 members")],
        ),
        (mutated(options=["A", ""]), [("inputs.options[1]", "must be at least 1 characters")]),
        (mutated(method="vibes"), [("inputs.method", "must be one of 'weighted_sum', 'topsis'")]),
        (mutated(question=""), [("inputs.question", "must be at least 1 characters")]),
        (mutated(question="?" * 2001), [("inputs.question", "must be at most 2000 characters")]),
        (mutated(criteria=[]), [("inputs.criteria", "must have at least 1 items")]),
        (
            mutated(criteria=[{"name": "price", "weight": 0, "direction": "cost"}, LAPTOPS["criteria"][1]]),
            [("inputs.criteria[0].weight", "must be > 0")],
        ),
        (
            mutated(criteria=[{"name": "price", "weight": True, "direction": "cost"}, LAPTOPS["criteria"][1]]),
            [("inputs.criteria[0].weight", "must be of type number")],
        ),
        (
            mutated(criteria=[{"name": "price", "weight": math.nan, "direction": "cost"}, LAPTOPS["criteria"][1]]),
            [("inputs.criteria[0].weight", "must be a finite number")],
        ),
        (
            mutated(criteria=[LAPTOPS["criteria"][0], {"name": "quality", "weight": 1, "direction": "up"}]),
            [("inputs.criteria[1].direction", "must be one of 'benefit', 'cost'")],
        ),
        (
            mutated(criteria=[LAPTOPS["criteria"][0], {"name": "price", "weight": 1, "direction": "cost"}]),
            [
                ("inputs.criteria[1].name", "duplicate criterion name"),
                ("inputs.scores.A.quality", "not a criterion"),
                ("inputs.scores.B.quality", "not a criterion"),
                ("inputs.scores.C.quality", "not a criterion"),
            ],
        ),
        (
            mutated(criteria=[{"name": "price", "direction": "cost"}, LAPTOPS["criteria"][1]]),
            [("inputs.criteria[0].weight", "is required")],
        ),
        (
            mutated(scores={**LAPTOPS["scores"], "A": {"price": "cheap", "quality": 1}}),
            [("inputs.scores.A.price", "must be of type number")],
        ),
        (
            mutated(scores={**LAPTOPS["scores"], "A": {"price": math.nan, "quality": 1}}),
            [("inputs.scores.A.price", "must be a finite number")],
        ),
        (
            mutated(scores={**LAPTOPS["scores"], "A": {"price": math.inf, "quality": 1}}),
            [("inputs.scores.A.price", "must be <= 1000000000000000")],
        ),
        ({k: v for k, v in LAPTOPS.items() if k != "scores"}, [("inputs.scores", "is required")]),
        (mutated(extra=1), [("inputs", "unknown member(s): 'extra'")]),
        ("not an object", [("inputs", "must be of type object")]),
    ],
)
def test_validation_errors(data: Any, expected: list[tuple[str, str]]) -> None:
    assert PACK.validate(data, policy=POLICY) == [FieldError(field, message) for field, message in expected]


# --- properties -----------------------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    n_options = draw(st.integers(2, 6))
    n_criteria = draw(st.integers(1, 4))
    options = [f"opt{i}" for i in range(n_options)]
    criteria = [
        (f"crit{j}", draw(st.integers(1, 9)), draw(st.sampled_from(["benefit", "cost"]))) for j in range(n_criteria)
    ]
    values = st.integers(-20, 20)
    scores = {o: [draw(values) for _ in range(n_criteria)] for o in options}
    return inputs(options, criteria, scores, draw(st.sampled_from(["weighted_sum", "topsis"])))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(problems())
def test_output_invariants(data: dict[str, Any]) -> None:
    out = decide(data)
    ranking = out["ranking"]
    order = {option: i for i, option in enumerate(data["options"])}

    assert out["winner"] == ranking[0]["option"]
    assert [row["rank"] for row in ranking] == list(range(1, len(data["options"]) + 1))
    assert sorted(row["option"] for row in ranking) == sorted(data["options"])
    assert all(0.0 <= row["score"] <= 1.0 for row in ranking)
    keys = [(-row["score"], order[row["option"]]) for row in ranking]
    assert keys == sorted(keys)  # by score, then by input order
    assert math.fsum(out["weights"].values()) == pytest.approx(1.0, abs=1e-9)
    assert list(out["weights"]) == [c["name"] for c in data["criteria"]]
    assert [row["criterion"] for row in out["sensitivity"]] == list(out["weights"])
    for row, weight in zip(out["sensitivity"], out["weights"].values(), strict=True):
        change = row["weight_change_to_flip"]
        assert change is None or -weight - 1e-6 <= change <= 1 - weight + 1e-6  # the new weight is in [0, 1]
    if len(data["criteria"]) == 1:
        assert sensitivity(out) == [None]


def _weights_at(problem: Problem, k: int, t: Fraction) -> list[Fraction]:
    """Criterion k weighs t; the others share 1 − t in their original proportions."""
    rest = sum(Fraction(w) for j, w in enumerate(problem.raw_weights) if j != k)
    return [t if j == k else (1 - t) * Fraction(w) / rest for j, w in enumerate(problem.raw_weights)]


def _exact_weighted_sum_winner(problem: Problem, weights: list[Fraction]) -> int:
    """An independent oracle in exact rationals: min–max scaling, Σ weight × scaled, ties by order."""
    columns = list(zip(*[[Fraction(x) for x in row] for row in problem.matrix], strict=True))
    scaled = []
    for column, benefit in zip(columns, problem.benefit, strict=True):
        low, high = min(column), max(column)
        if low == high:
            scaled.append([Fraction(1)] * len(column))
        else:
            scaled.append([(x - low) / (high - low) if benefit else (high - x) / (high - low) for x in column])
    totals = [sum(w * scaled[j][i] for j, w in enumerate(weights)) for i in range(len(problem.options))]
    return max(range(len(totals)), key=lambda i: (totals[i], -i))


def _float_topsis_winner(problem: Problem, weights: list[Fraction]) -> int:
    scores = topsis_scores(problem, [float(w) for w in weights])
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def _check_sensitivity(data: dict[str, Any], method: str, winner_at: Any, delta: float) -> None:
    data["method"] = method
    assume(len(data["criteria"]) > 1)
    problem = Problem.from_inputs(data)
    out = decide(data)
    winner = data["options"].index(out["winner"])
    total = sum(Fraction(w) for w in problem.raw_weights)
    for k, change in enumerate(sensitivity(out)):
        w_k = Fraction(problem.raw_weights[k]) / total
        assume(winner_at(problem, _weights_at(problem, k, w_k)) == winner)  # no sub-1e-6 near-ties
        if change is None:
            for t in (Fraction(i, 40) for i in range(41)):
                assert winner_at(problem, _weights_at(problem, k, t)) == winner
            continue
        if change == 0.0:
            continue
        step = Fraction(delta) if change > 0 else -Fraction(delta)
        flip = w_k + Fraction(change)
        beyond = min(max(flip + step, Fraction(0)), Fraction(1))
        assert winner_at(problem, _weights_at(problem, k, beyond)) != winner
        if abs(Fraction(change)) > 2 * delta:  # the winner holds all the way to just before the flip
            for i in range(1, 21):
                t = w_k + (flip - step - w_k) * Fraction(i, 20)
                assert winner_at(problem, _weights_at(problem, k, t)) == winner


@settings(max_examples=200, deadline=None, derandomize=True)
@given(problems())
def test_weighted_sum_sensitivity_is_the_nearest_exact_flip(data: dict[str, Any]) -> None:
    _check_sensitivity(data, "weighted_sum", _exact_weighted_sum_winner, delta=2e-6)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(problems())
def test_topsis_sensitivity_is_the_nearest_flip(data: dict[str, Any]) -> None:
    _check_sensitivity(data, "topsis", _float_topsis_winner, delta=1e-5)


def test_weighted_sum_scores_match_the_oracle_on_the_worked_example() -> None:
    problem = Problem.from_inputs(LAPTOPS)

    assert weighted_sum_scores(problem, [0.25, 0.75]) == [0.625, 0.75, 0.125]
