"""Built-in reading comprehension with a distractor (Yousefi et al.'s second task).

A passage of two sentences built from one template states the same attribute of two people;
the question asks about one of them, so the other sentence is a distractor that offers a
wrong answer of the right kind:

    Omar plays the cello. Greta plays the violin.
    Question: Which instrument does Greta play?
    Answer:             -> "violin"

Attributes take turns with i and the relevant sentence comes first in every other round, so
any prefix is balanced over both. Spans: 'relevant' is the sentence about the person asked,
'irrelevant' the distractor sentence (each from its first character to its full stop).
"""

from __future__ import annotations

from typing import NamedTuple

from reprlab.worker.data.base import BuiltinGenerator, Draws, Example


class Attribute(NamedTuple):
    statement: str  # "{name}" and "{value}" slots
    question: str  # a "{name}" slot
    values: list[str]


ATTRIBUTES: dict[str, Attribute] = {
    "city": Attribute("{name} lives in {value}.", "Where does {name} live?",
                      ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Krakow",
                       "Dublin", "Seville", "Quito", "Zurich", "Chicago"]),
    "job": Attribute("{name} works as a {value}.", "What is {name}'s job?",
                     ["baker", "nurse", "pilot", "teacher", "lawyer", "farmer", "dentist",
                      "painter", "plumber", "tailor", "sailor", "carpenter"]),
    "pet": Attribute("{name} has a pet {value}.", "What pet does {name} have?",
                     ["dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish",
                      "ferret", "lizard", "canary", "tortoise", "snake"]),
    "colour": Attribute("{name}'s favourite colour is {value}.",
                        "What is {name}'s favourite colour?",
                        ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown",
                         "grey", "black", "white", "teal"]),
    "sport": Attribute("{name} plays {value} on weekends.", "Which sport does {name} play?",
                       ["tennis", "football", "hockey", "golf", "cricket", "rugby", "baseball",
                        "volleyball", "badminton", "squash", "basketball", "handball"]),
    "instrument": Attribute("{name} plays the {value}.", "Which instrument does {name} play?",
                            ["piano", "violin", "guitar", "cello", "flute", "trumpet", "drums",
                             "harp", "saxophone", "clarinet", "banjo", "accordion"]),
    "drink": Attribute("{name} drinks {value} every morning.",
                       "What does {name} drink every morning?",
                       ["coffee", "tea", "milk", "juice", "cocoa", "water", "lemonade", "kefir",
                        "espresso", "matcha", "chai", "smoothies"]),
    "language": Attribute("{name} speaks {value} at home.",
                          "Which language does {name} speak at home?",
                          ["French", "German", "Spanish", "Italian", "Polish", "Dutch", "Greek",
                           "Turkish", "Swahili", "Japanese", "Korean", "Hindi"]),
}  # fmt: skip
NAMES = [
    "Alice", "Bernard", "Chloe", "Dmitri", "Esther", "Farid", "Greta", "Hiroshi", "Ingrid",
    "Jamal", "Kofi", "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven",
    "Tomasz", "Ulrike", "Valentina", "Wen", "Ximena", "Yusuf", "Zoe", "Omar", "Anna", "Hugo",
    "Maya", "Leon", "Sara",
]  # fmt: skip
_ATTRIBUTE_NAMES = list(ATTRIBUTES)
OPTIONS = tuple(sorted({v for a in ATTRIBUTES.values() for v in a.values}))


def _distinct_pair(rng: Draws, seq: list[str]) -> tuple[str, str]:
    first = rng.pick(seq)
    second = rng.pick(seq)
    while second == first:
        second = rng.pick(seq)
    return first, second


def capacity() -> int:
    """Exact count of distinct items: attribute x ordered pair of people x ordered pair of
    values x sentence order (every attribute has as many values as the smallest one)."""
    n_values = min(len(a.values) for a in ATTRIBUTES.values())
    people = len(NAMES) * (len(NAMES) - 1)
    return len(ATTRIBUTES) * people * n_values * (n_values - 1) * 2


def draw(rng: Draws, i: int) -> Example:
    """One passage and question; the attribute cycles with i, the order with i // attributes."""
    attribute = _ATTRIBUTE_NAMES[i % len(_ATTRIBUTE_NAMES)]
    relevant_first = (i // len(_ATTRIBUTE_NAMES)) % 2 == 0
    template = ATTRIBUTES[attribute]
    entity, distractor = _distinct_pair(rng, NAMES)
    answer, wrong = _distinct_pair(rng, template.values)
    relevant = template.statement.format(name=entity, value=answer)
    irrelevant = template.statement.format(name=distractor, value=wrong)
    first, second = (relevant, irrelevant) if relevant_first else (irrelevant, relevant)
    passage = f"{first} {second}"
    text = f"{passage}\nQuestion: {template.question.format(name=entity)}\nAnswer:"
    first_span = (0, len(first))
    second_span = (len(first) + 1, len(passage))
    relevant_span, irrelevant_span = (
        (first_span, second_span) if relevant_first else (second_span, first_span)
    )
    return Example(
        input=text,
        output=answer,
        labels={
            "entity": entity,
            "attribute": attribute,
            "answer": answer,
            "distractor": distractor,
            "distractor_answer": wrong,
            "relevant_first": int(relevant_first),
        },
        spans={"relevant": relevant_span, "irrelevant": irrelevant_span},
    )


GENERATOR = BuiltinGenerator(capacity(), draw, "plain", " ", OPTIONS)
