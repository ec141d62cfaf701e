"""Built-in multi-subject multiple choice (MMLU-like), with answers computed by our code.

Every item has four options, one correct; the correct letter is uniform over A-D and subjects
take turns, so any prefix of the generated list is balanced.
"""

from __future__ import annotations

from collections.abc import Callable

from reprlab.worker.data.base import BuiltinGenerator, Draws, Example

LETTERS = ["A", "B", "C", "D"]

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Greece": "Athens",
    "Ireland": "Dublin", "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ghana": "Accra", "Peru": "Lima", "Chile": "Santiago", "Argentina": "Buenos Aires",
    "Colombia": "Bogota", "Canada": "Ottawa", "Mexico": "Mexico City", "Japan": "Tokyo",
    "China": "Beijing", "India": "New Delhi", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Australia": "Canberra", "Turkey": "Ankara", "Iran": "Tehran", "Morocco": "Rabat",
    "Denmark": "Copenhagen", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Czechia": "Prague", "Romania": "Bucharest", "Bulgaria": "Sofia", "Cuba": "Havana",
    "Ecuador": "Quito", "Georgia": "Tbilisi", "Armenia": "Yerevan", "Latvia": "Riga",
    "Estonia": "Tallinn", "Lithuania": "Vilnius", "Croatia": "Zagreb", "Serbia": "Belgrade",
    "Iceland": "Reykjavik", "Indonesia": "Jakarta", "Philippines": "Manila",
}  # fmt: skip
ELEMENTS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "carbon": "C", "nitrogen": "N",
    "oxygen": "O", "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg",
    "aluminium": "Al", "silicon": "Si", "phosphorus": "P", "sulfur": "S", "chlorine": "Cl",
    "argon": "Ar", "potassium": "K", "calcium": "Ca", "iron": "Fe", "copper": "Cu",
    "zinc": "Zn", "silver": "Ag", "tin": "Sn", "iodine": "I", "gold": "Au", "mercury": "Hg",
    "lead": "Pb", "uranium": "U", "nickel": "Ni", "cobalt": "Co", "manganese": "Mn",
    "chromium": "Cr", "titanium": "Ti", "platinum": "Pt", "tungsten": "W", "boron": "B",
}  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
UNITS = [("metres", "centimetres", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("kilometres", "metres", 1000), ("minutes", "seconds", 60),
         ("litres", "millilitres", 1000), ("days", "hours", 24), ("weeks", "days", 7)]  # fmt: skip
_FACTORS = sorted({f for _, _, f in UNITS} | {10})
_COUNTRIES = list(CAPITALS)
_ELEMENT_NAMES = list(ELEMENTS)

Question = tuple[str, str, list[str]]  # question, correct option, distractor pool (>= 3)


def _numeric_distractors(rng: Draws, answer: int) -> list[str]:
    """Three near misses: within ~10% of the answer (at least +-5), non-negative, not it.

    Rejection sampling is cheap here: at least five values qualify even for an answer of 0.
    """
    spread = max(5, abs(answer) // 10 + 3)
    out: set[int] = set()
    while len(out) < 3:
        value = answer + int(rng.integers(-spread, spread + 1))
        if value >= 0 and value != answer:
            out.add(value)
    return [str(v) for v in sorted(out)]


def _arithmetic(rng: Draws) -> Question:
    a, b = int(rng.integers(10, 1000)), int(rng.integers(10, 1000))
    if rng.random() < 0.5:
        q, ans = f"What is {a} + {b}?", a + b
    else:
        a, b = max(a, b), min(a, b)
        q, ans = f"What is {a} - {b}?", a - b
    return q, str(ans), _numeric_distractors(rng, ans)


def _multiplication(rng: Draws) -> Question:
    a, b = int(rng.integers(3, 100)), int(rng.integers(3, 30))
    return f"What is {a} times {b}?", str(a * b), _numeric_distractors(rng, a * b)


def _units(rng: Draws) -> Question:
    big, small, factor = UNITS[int(rng.integers(len(UNITS)))]
    x = int(rng.integers(2, 400))
    # Distractors a careless reader would pick: a neighbouring amount, or the wrong factor
    # (so the right answer is not the only multiple of the factor).
    near = [(x + d) * factor for d in (-3, -2, -1, 1, 2, 3) if x + d > 0]
    wrong_factor = [x * f for f in _FACTORS if f != factor]
    return (
        f"How many {small} are there in {x} {big}?",
        str(x * factor),
        [str(v) for v in near + wrong_factor],
    )


def _geography(rng: Draws) -> Question:
    country = rng.pick(_COUNTRIES)
    phrasing = int(rng.integers(3))
    q = [f"What is the capital of {country}?", f"Which city is the capital of {country}?",
         f"The seat of government of {country} is in which city?"][phrasing]  # fmt: skip
    others = [c for k, c in CAPITALS.items() if k != country]
    return q, CAPITALS[country], others


def _chemistry(rng: Draws) -> Question:
    name = rng.pick(_ELEMENT_NAMES)
    if rng.random() < 0.5:
        others = [s for k, s in ELEMENTS.items() if k != name]
        return f"What is the chemical symbol of {name}?", ELEMENTS[name], others
    others = [k for k in ELEMENTS if k != name]
    return f"Which element has the chemical symbol {ELEMENTS[name]}?", name, others


def _calendar(rng: Draws) -> Question:
    start, n = int(rng.integers(7)), int(rng.integers(1, 400))
    q = f"If today is {DAYS[start]}, what day of the week will it be in {n} days?"
    answer = DAYS[(start + n) % 7]
    return q, answer, [d for d in DAYS if d != answer]


def _geometry(rng: Draws) -> Question:
    a, b = int(rng.integers(2, 60)), int(rng.integers(2, 60))
    shape = f"A rectangle is {a} cm long and {b} cm wide."
    area, perimeter = a * b, 2 * (a + b)
    if rng.random() < 0.5:
        q, ans, confusion = f"{shape} What is its area in square centimetres?", area, perimeter
    else:
        q, ans, confusion = f"{shape} What is its perimeter in centimetres?", perimeter, area
    # The classic mix-up of area and perimeter is a candidate next to the near misses.
    return q, str(ans), [str(confusion), *_numeric_distractors(rng, ans)]


def _remainders(rng: Draws) -> Question:
    a, b = int(rng.integers(20, 1000)), int(rng.integers(4, 13))
    q = f"What is the remainder when {a} is divided by {b}?"
    ans = a % b
    return q, str(ans), [str(r) for r in range(b) if r != ans]


SUBJECTS: dict[str, Callable[[Draws], Question]] = {
    "elementary_arithmetic": _arithmetic,
    "multiplication": _multiplication,
    "unit_conversion": _units,
    "world_geography": _geography,
    "chemistry": _chemistry,
    "calendar_reasoning": _calendar,
    "geometry": _geometry,
    "number_theory": _remainders,
}
_SUBJECT_NAMES = list(SUBJECTS)


def capacity() -> int:
    """A conservative count of distinct items (question stems times option orders).

    The smallest subject (capitals: 150 stems, each with 49*48*47 distractor choices and 4
    answer slots) is far larger; the cap keeps rejection sampling fast and items varied.
    """
    return 200_000


def _distinct_indices(rng: Draws, n: int, k: int) -> list[int]:
    # Cheaper than Generator.choice(replace=False) for k << n, which dominates otherwise.
    out: list[int] = []
    while len(out) < k:
        j = int(rng.integers(n))
        if j not in out:
            out.append(j)
    return out


def draw(rng: Draws, i: int) -> Example:
    """One question; subjects take turns with i, the correct letter is uniform."""
    subject = _SUBJECT_NAMES[i % len(_SUBJECT_NAMES)]
    question, correct, pool = SUBJECTS[subject](rng)
    pool = sorted(set(pool) - {correct})
    if len(pool) < 3:  # a bug in a subject generator, not a user error
        raise RuntimeError(f"{subject} produced {len(pool)} distractors for {question!r}")
    options = [pool[j] for j in _distinct_indices(rng, len(pool), 3)]
    slot = int(rng.integers(4))
    options.insert(slot, correct)
    lines = [question] + [f"{letter}. {opt}" for letter, opt in zip(LETTERS, options, strict=True)]
    text = "\n".join(lines) + "\nAnswer:"
    return Example(input=text, output=LETTERS[slot],
                   labels={"subject": subject, "answer": LETTERS[slot]})  # fmt: skip


GENERATOR = BuiltinGenerator(capacity(), draw, "mcq", " ", tuple(LETTERS))
