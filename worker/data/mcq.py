"""Built-in multi-subject multiple choice (MMLU-like), with answers computed by our code.

Every item has four options, one correct; the correct letter is uniform over A-D and subjects
take turns, so any prefix of the generated list is balanced.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reprlab.worker.data.base import Example

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

Question = tuple[str, str, list[str]]  # question, correct option, distractor pool


def _numeric_distractors(rng: np.random.Generator, answer: int) -> list[str]:
    out: set[int] = set()
    while len(out) < 3:
        delta = int(rng.choice([-1, 1])) * int(rng.integers(1, max(3, abs(answer) // 10 + 3)))
        if answer + delta != answer and answer + delta >= 0:
            out.add(answer + delta)
    return [str(v) for v in out]


def _arithmetic(rng: np.random.Generator) -> Question:
    a, b = int(rng.integers(10, 1000)), int(rng.integers(10, 1000))
    if rng.random() < 0.5:
        q, ans = f"What is {a} + {b}?", a + b
    else:
        a, b = max(a, b), min(a, b)
        q, ans = f"What is {a} - {b}?", a - b
    return q, str(ans), _numeric_distractors(rng, ans)


def _multiplication(rng: np.random.Generator) -> Question:
    a, b = int(rng.integers(3, 100)), int(rng.integers(3, 30))
    return f"What is {a} times {b}?", str(a * b), _numeric_distractors(rng, a * b)


def _units(rng: np.random.Generator) -> Question:
    big, small, factor = UNITS[int(rng.integers(len(UNITS)))]
    x = int(rng.integers(2, 400))
    q = f"How many {small} are there in {x} {big}?"
    return q, str(x * factor), _numeric_distractors(rng, x * factor)


def _geography(rng: np.random.Generator) -> Question:
    countries = list(CAPITALS)
    country = countries[int(rng.integers(len(countries)))]
    phrasing = int(rng.integers(3))
    q = [f"What is the capital of {country}?", f"Which city is the capital of {country}?",
         f"The seat of government of {country} is in which city?"][phrasing]  # fmt: skip
    others = [c for k, c in CAPITALS.items() if k != country]
    return q, CAPITALS[country], others


def _chemistry(rng: np.random.Generator) -> Question:
    names = list(ELEMENTS)
    name = names[int(rng.integers(len(names)))]
    if rng.random() < 0.5:
        others = [s for k, s in ELEMENTS.items() if k != name]
        return f"What is the chemical symbol of {name}?", ELEMENTS[name], others
    others = [k for k in ELEMENTS if k != name]
    return f"Which element has the chemical symbol {ELEMENTS[name]}?", name, others


def _calendar(rng: np.random.Generator) -> Question:
    start, n = int(rng.integers(7)), int(rng.integers(1, 400))
    q = f"If today is {DAYS[start]}, what day of the week will it be in {n} days?"
    answer = DAYS[(start + n) % 7]
    return q, answer, [d for d in DAYS if d != answer]


SUBJECTS: dict[str, Callable[[np.random.Generator], Question]] = {
    "elementary_arithmetic": _arithmetic,
    "multiplication": _multiplication,
    "unit_conversion": _units,
    "world_geography": _geography,
    "chemistry": _chemistry,
    "calendar_reasoning": _calendar,
}


def capacity() -> int:
    """A conservative count of distinct items (questions times option orders)."""
    return 200_000


def draw(rng: np.random.Generator, i: int) -> Example:
    """One question; subjects take turns with i, the correct letter is uniform."""
    names = list(SUBJECTS)
    subject = names[i % len(names)]
    question, correct, pool = SUBJECTS[subject](rng)
    pool = sorted(set(pool) - {correct})
    picks = rng.choice(len(pool), size=3, replace=False)
    options = [pool[int(j)] for j in picks]
    slot = int(rng.integers(4))
    options.insert(slot, correct)
    lines = [question] + [f"{letter}. {opt}" for letter, opt in zip(LETTERS, options, strict=True)]
    text = "\n".join(lines) + "\nAnswer:"
    return Example(input=text, output=LETTERS[slot],
                   labels={"subject": subject, "answer": LETTERS[slot]})  # fmt: skip
