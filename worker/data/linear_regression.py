"""Built-in in-context linear regression (Yousefi et al.'s first task).

An item shows a few points of a hidden line y = w*x + b, one per line, then the x of a new
point; the answer is its y (target delimiter " "):

    x = 3, y = 11
    x = 0, y = 2
    x = 5, y = 17
    x = 7, y =          -> "23"

Slopes take turns with i over a small set, so any prefix is balanced and an RSA hypothesis on
the slope has few, well-filled classes; the bias, the shown x values and the query x are drawn.
All numbers are small non-negative integers, so each is a short run of digit tokens and the
answers form a closed set (every y the grammar can produce) for accuracy scoring.

Spans: 'relevant' covers the in-context pairs (the only evidence of w and b) and 'query' the
query x. The task has no natural irrelevant part (every shown pair is evidence), so there is
no 'irrelevant' span; attention to 'relevant' vs 'query' is the ratio this task supports.
"""

from __future__ import annotations

from reprlab.worker.data.base import BuiltinGenerator, Draws, Example

WEIGHTS = [1, 2, 3, 4, 5, 6]
BIASES = list(range(10))
XS = list(range(10))
N_PAIRS = 3
# Every y the grammar can produce (all numbers are non-negative, so y is monotone in w, x, b).
OPTIONS = tuple(
    str(y)
    for y in range(min(WEIGHTS) * min(XS) + min(BIASES), max(WEIGHTS) * max(XS) + max(BIASES) + 1)
)


def _line(x: int, y: int | None) -> str:
    return f"x = {x}, y =" if y is None else f"x = {x}, y = {y}"


def capacity() -> int:
    """Exact count of distinct items: slope x bias x ordered (pairs' x values, query x)."""
    orders = 1
    for j in range(N_PAIRS + 1):
        orders *= len(XS) - j
    return len(WEIGHTS) * len(BIASES) * orders


def draw(rng: Draws, i: int) -> Example:
    """One item; the slope cycles with i, the x values are distinct within the item."""
    weight = WEIGHTS[i % len(WEIGHTS)]
    bias = rng.pick(BIASES)
    xs: list[int] = []
    while len(xs) < N_PAIRS + 1:
        x = rng.pick(XS)
        if x not in xs:
            xs.append(x)
    *shown, query = xs
    context = "\n".join(_line(x, weight * x + bias) for x in shown)
    text = f"{context}\n{_line(query, None)}"
    q_start = len(context) + len("\nx = ")
    answer = weight * query + bias
    return Example(
        input=text,
        output=str(answer),
        labels={"weight": weight, "bias": bias, "x": query, "y": answer},
        spans={"relevant": (0, len(context)), "query": (q_start, q_start + len(str(query)))},
    )


GENERATOR = BuiltinGenerator(capacity(), draw, "plain", " ", OPTIONS)
