"""Built-in binary sentiment reviews from a combinatorial grammar.

Each review names a product or place, judges one or two of its aspects and ends in a widely
varied final word (an occasion, a person, a city, an adjective), because the analysis reads the
last token's state and prompts ending in the same token share it at the embedding layer.
"""

from __future__ import annotations

import numpy as np

from reprlab.worker.data.base import Example

THINGS = [
    "blender", "laptop", "backpack", "tent", "coffee maker", "phone case", "desk lamp",
    "headphones", "kettle", "office chair", "rain jacket", "toaster", "novel", "board game",
    "hiking boots", "camera", "vacuum cleaner", "mattress", "watch", "bicycle", "keyboard",
    "monitor", "frying pan", "suitcase", "yoga mat", "printer", "speaker", "sofa", "drone",
    "air fryer", "tablet", "scarf", "sunglasses", "water bottle", "guitar", "microwave",
    "hotel", "restaurant", "bakery", "cafe", "film", "documentary", "concert", "museum tour",
    "cooking class", "gym", "barber shop", "car rental", "ferry ride", "pizza place",
]  # fmt: skip
ASPECTS = [
    "build quality", "price", "design", "battery life", "customer service", "delivery",
    "packaging", "sound", "comfort", "staff", "atmosphere", "menu", "plot", "acting",
    "instructions", "durability", "performance", "screen", "setup", "warranty", "smell",
    "size", "weight", "finish", "colour", "soundtrack", "service", "location", "view", "noise",
]  # fmt: skip
POSITIVE = [
    "excellent", "superb", "wonderful", "fantastic", "delightful", "outstanding", "brilliant",
    "lovely", "impressive", "solid", "charming", "flawless", "reliable", "gorgeous", "great",
    "terrific", "pleasant", "sturdy", "generous", "remarkable", "elegant", "smooth",
    "refreshing", "marvellous", "splendid", "top-notch", "spotless", "friendly", "cosy", "sharp",
]  # fmt: skip
NEGATIVE = [
    "awful", "terrible", "dreadful", "disappointing", "flimsy", "useless", "horrible", "poor",
    "shoddy", "mediocre", "noisy", "broken", "unreliable", "cheap", "ugly", "clumsy", "sloppy",
    "faulty", "miserable", "annoying", "rude", "dirty", "overpriced", "bland", "wobbly",
    "confusing", "sluggish", "fragile", "lousy", "pathetic",
]  # fmt: skip
INTENSIFIERS = ["", "really ", "truly ", "quite ", "very ", "absolutely ", "honestly ",
                "surprisingly ", "remarkably ", "rather "]  # fmt: skip
OPENERS = ["", "I bought the {thing} last month. ", "We tried the {thing} this week. ",
           "Update after two weeks with the {thing}. ", "My partner picked this {thing}. ",
           "Second review of the {thing}. ", "Got the {thing} as a gift. "]  # fmt: skip
POS_VERDICTS = ["I would recommend it to", "I will happily buy it again for",
                "It made a perfect present for", "I already told", "Worth every penny for",
                "A real treat for"]  # fmt: skip
NEG_VERDICTS = ["I would not recommend it to", "I am returning it, sorry",
                "It was a waste of money for", "I warned", "Never again for",
                "A letdown for"]  # fmt: skip
PEOPLE = [
    "grandma", "colleagues", "neighbours", "students", "parents", "friends", "kids",
    "roommates", "teammates", "cousins", "travellers", "beginners", "professionals", "anyone",
    "families", "runners", "gamers", "photographers", "musicians", "teachers", "nurses",
    "campers", "commuters", "bakers", "cyclists", "readers", "artists", "retirees", "twins",
    "everybody", "Alice", "Bernard", "Chloe", "Dmitri", "Esther", "Farid", "Greta", "Hiroshi",
    "Ingrid", "Jamal", "Kofi", "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa",
    "Sven", "Tomasz", "Ulrike", "Valentina", "Wen", "Ximena", "Yusuf", "Zoe",
]  # fmt: skip
CITIES = [
    "Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Krakow", "Porto", "Dublin",
    "Seville", "Bergen", "Quito", "Tbilisi", "Valencia", "Zurich", "Chicago", "Denver",
    "Glasgow", "Leeds", "Lyon", "Munich", "Naples", "Osaka", "Perth", "Riga", "Sofia",
    "Tallinn", "Vienna", "Warsaw", "Yerevan",
]  # fmt: skip

_TEMPLATES = 4


def capacity() -> int:
    """A lower bound of distinct reviews per class times two."""
    per_class = len(THINGS) * len(ASPECTS) * len(POSITIVE) * len(INTENSIFIERS) * _TEMPLATES
    return 2 * per_class


def draw(rng: np.random.Generator, i: int) -> Example:
    """One review; classes alternate with i so any prefix is balanced."""
    positive = i % 2 == 0
    words = POSITIVE if positive else NEGATIVE
    verdicts = POS_VERDICTS if positive else NEG_VERDICTS

    def pick(seq: list[str]) -> str:
        return seq[int(rng.integers(len(seq)))]

    thing, aspect, aspect2 = pick(THINGS), pick(ASPECTS), pick(ASPECTS)
    adj, adj2, inten = pick(words), pick(words), pick(INTENSIFIERS)
    opener = pick(OPENERS).format(thing=thing)
    template = int(rng.integers(_TEMPLATES))
    if template == 0:
        text = (
            f"{opener}The {aspect} of this {thing} is {inten}{adj}. {pick(verdicts)} {pick(PEOPLE)}"
        )
    elif template == 1:
        text = f"{opener}{thing.capitalize()} with {inten}{adj} {aspect}; the {aspect2} felt {adj2}"
    elif template == 2:
        trip = f"Tried the {thing} on a trip: the {aspect} was {inten}{adj}"
        text = f"{opener}{trip}, even in {pick(CITIES)}"
    else:
        pair = f"{inten.capitalize()}{adj} {aspect} and {adj2} {aspect2}"
        text = f"{opener}{pair}. {pick(verdicts)} {pick(PEOPLE)}"
    label = "positive" if positive else "negative"
    return Example(input=text.strip(), output=label, labels={"sentiment": label})
