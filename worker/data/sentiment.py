"""Built-in binary sentiment reviews from a combinatorial grammar.

A review names a product or place, judges one or two of its aspects, and may open with a
neutral sentence (when it was bought, what it cost, how long it was used). Every template ends
in a slot drawn from a large vocabulary (a person, a city, an occasion, a month, an adjective,
an aspect), because the analysis reads the last token's state and prompts ending in the same
token share it at the embedding layer.
"""

from __future__ import annotations

from reprlab.worker.data.base import BuiltinGenerator, Draws, Example

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
OPENERS = ["I bought the {thing} last month. ", "We tried the {thing} this week. ",
           "Update after two weeks with the {thing}. ", "My partner picked this {thing}. ",
           "Second review of the {thing}. ", "Got the {thing} as a gift. "]  # fmt: skip
# Neutral context sentences; the numbers alone multiply the variety by hundreds.
ASIDES = ["It cost {n} euros. ", "I have used it for {n} days. ", "It arrived after {n} hours. ",
          "Order number {n} for the record. ", "We were a group of {n}. "]  # fmt: skip
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
OCCASIONS = [
    "birthday", "wedding", "holidays", "Christmas", "anniversary", "graduation", "Easter",
    "weekend", "honeymoon", "housewarming", "marathon", "retreat", "reunion", "festival",
    "barbecue", "picnic", "sleepover", "hackathon", "exams", "move", "Diwali", "Hanukkah",
    "Thanksgiving", "carnival", "commute", "renovation", "internship", "vacation",
]  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip


def _template(rng: Draws, positive: bool, thing: str) -> str:
    """The judging part of a review; each branch ends in a widely varied word."""
    words = POSITIVE if positive else NEGATIVE
    verdict = rng.pick(POS_VERDICTS if positive else NEG_VERDICTS)
    aspect, aspect2 = rng.pick(ASPECTS), rng.pick(ASPECTS)
    adj, adj2, inten = rng.pick(words), rng.pick(words), rng.pick(INTENSIFIERS)
    judged = f"{inten}{adj}"
    match rng.integers(_TEMPLATES):
        case 0:
            return f"The {aspect} of this {thing} is {judged}. {verdict} {rng.pick(PEOPLE)}"
        case 1:
            return f"{thing.capitalize()} with {judged} {aspect}; the {aspect2} felt {adj2}"
        case 2:
            trip = f"Tried the {thing} on a trip: the {aspect} was {judged}"
            return f"{trip}, even in {rng.pick(CITIES)}"
        case 3:
            pair = f"{inten.capitalize()}{adj} {aspect} and {adj2} {aspect2}"
            return f"{pair}. {verdict} {rng.pick(PEOPLE)}"
        case 4:
            return f"Had the {thing} for our {rng.pick(OCCASIONS)} and the {aspect} was {judged}"
        case 5:
            return f"The {thing} was {judged} for the {rng.pick(OCCASIONS)}, mostly the {aspect}"
        case 6:
            pair = f"{adj.capitalize()} {thing} and {inten}{adj2} {aspect}"
            return f"{pair}, as it has been since {rng.pick(MONTHS)}"
        case _:
            person = rng.pick(PEOPLE).capitalize()
            return f"{person} found the {thing} {judged}, especially its {aspect}"


_TEMPLATES = 8


def capacity() -> int:
    """A lower bound of distinct reviews: one template's thing x aspect x adjective x
    intensifier combinations per class (the openers, asides and endings only add to it)."""
    per_class = len(THINGS) * len(ASPECTS) * len(POSITIVE) * len(INTENSIFIERS)
    return 2 * per_class


def draw(rng: Draws, i: int) -> Example:
    """One review; classes alternate with i so any prefix is balanced."""
    positive = i % 2 == 0
    thing = rng.pick(THINGS)
    opener = rng.pick(OPENERS).format(thing=thing) if rng.random() < 0.4 else ""
    aside = rng.pick(ASIDES).format(n=rng.integers(2, 400)) if rng.random() < 0.3 else ""
    text = opener + aside + _template(rng, positive, thing)
    label = "positive" if positive else "negative"
    return Example(input=text.strip(), output=label, labels={"sentiment": label})


GENERATOR = BuiltinGenerator(capacity(), draw, "plain", "\n", ("negative", "positive"))
