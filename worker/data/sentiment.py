"""Built-in binary sentiment reviews from a combinatorial grammar with a large vocabulary.

A review is about one thing of one of ten kinds (kitchen appliances, gadgets, clothes, outdoor
gear, furniture and home, places to eat, places to stay, places to visit, stories on screen or
paper, live shows), each with its own aspects, openers and concrete experiences ("The battery
is dead by lunchtime."), so what is said fits what it is said about. A review has one to six
sentences: an optional neutral opener (when, for whom, where), one to three polar sentences of
eight forms (two kinds of aspect judgement, fragments, likes and dislikes, standouts,
comparisons, concessions, and concrete experiences, which are twice as likely as each other
form), and an optional closing verdict, score or exclamation. Styles range from one short
sentence to a paragraph.

The analysed state is read at the answer position, the last token of `input + "\\n"`: every
prompt ends in the same token, so the points differ only through what that token attends to.
That is why the variety is in the whole review (vocabulary, structure, length), not in one
slot (`benchmarks/builtin_id.py` measures TwoNN per layer on SmolLM2).

The module is long because most of it is the vocabulary (tuples of words and phrases per kind);
the grammar that draws from it is the last ~100 lines.
"""

from __future__ import annotations

from typing import NamedTuple

from reprlab.worker.data.base import BuiltinGenerator, Draws, Example


class Kind(NamedTuple):
    """Things of one kind, their aspects and what people write about them."""

    things: tuple[str, ...]
    aspects: tuple[str, ...]
    past: bool  # reviews of visits and media are told in the past tense
    tried: str  # "the best {thing} I have {tried} in years"
    openers: tuple[str, ...]  # neutral context; slots: see `_Review.fill`
    positive: tuple[str, ...]  # concrete good experiences ("It connected on the first try.")
    negative: tuple[str, ...]


_PRODUCT_OPENERS = (
    "I bought this {thing} {when}.", "Ordered the {thing} {when} for my {who}.",
    "Got this {thing} as {a_occasion} present from my {who}.",
    "We have had the {thing} for {few} weeks now.",
    "I have been using this {thing} for {few} months.",
    "My {who} recommended this {thing}, so I gave it a try.",
    "Picked up the {thing} on sale {when}.", "This is my second {thing} from this brand.",
    "I needed a new {thing} before our move to {city}.",
    "Bought it {when} after reading {mid} reviews.",
)  # fmt: skip
_EATING_OPENERS = (
    "We went to this {thing} {when}.", "Ate at this {thing} in {city} with my {who}.",
    "We booked this {thing} for my {who}'s {occasion}.",
    "Stopped by this {thing} {when} on a trip to {city}.",
    "Came here with {few} friends {when}.", "It was our first time at this {thing}.",
    "My {who} found this {thing} online {when}.", "We were in {city} for {few} days.",
)  # fmt: skip
_STAY_OPENERS = (
    "We stayed at this {thing} for {few} nights {when}.",
    "Booked this {thing} for my {who}'s {occasion}.",
    "Spent a week at this {thing} in {city}.", "We picked this {thing} for a trip to {city}.",
    "Stayed here with {few} friends {when}.", "It was our first time at this {thing}.",
    "My {who} found this {thing} online {when}.",
)  # fmt: skip
_VISIT_OPENERS = (
    "We went to this {thing} {when}.", "Visited this {thing} in {city} with my {who}.",
    "I have been going to this {thing} for {few} years.",
    "Tried this {thing} {when} on a trip to {city}.", "Came here with {few} friends {when}.",
    "It was my first time at this {thing}.", "My {who} found this {thing} online {when}.",
)  # fmt: skip
_STORY_OPENERS = (
    "Checked out this {thing} {when}.", "My {who} talked me into this {thing}.",
    "Finally got around to this {thing} {when}.", "I went in with no expectations.",
    "I had been waiting {few} months for this {thing}.",
    "Started this {thing} {when} on the train to {city}.",
    "Everyone at work was talking about this {thing}.",
    "Picked this {thing} for our {occasion} evening.",
)  # fmt: skip
_SHOW_OPENERS = (
    "We went to this {thing} {when}.", "Got tickets to this {thing} for my {who}'s {occasion}.",
    "Saw this {thing} in {city} {when}.", "We travelled {mid} kilometres for this {thing}.",
    "My {who} bought the tickets {when}.", "It was my first {thing} in years.",
    "I went to this {thing} with {few} friends.",
)  # fmt: skip

# fmt: off
KINDS: tuple[Kind, ...] = (
    Kind(
        things=("blender", "kettle", "toaster", "coffee maker", "air fryer", "microwave",
                "rice cooker", "stand mixer", "food processor", "espresso machine",
                "slow cooker", "dishwasher", "juicer", "sandwich maker", "bread maker"),
        aspects=("controls", "cleanup", "noise level", "capacity", "design", "price",
                 "instructions", "power cord", "build quality", "size", "finish", "warranty",
                 "display", "speed"),
        past=False, tried="owned", openers=_PRODUCT_OPENERS,
        positive=(
            "Cleaning it takes less than a minute.",
            "It is quiet enough to use while the baby sleeps.",
            "It is ready to go in about {few} minutes.",
            "I use it {few} times a week without fail.",
            "It replaced {few} gadgets on my counter.",
            "Everything I have made with it came out perfectly.",
            "It looks great on the counter.", "It still works like new after {few} years.",
        ),
        negative=(
            "It stopped working after {mid} days.",
            "It smells of burnt plastic whenever I switch it on.",
            "The buttons stick and the display flickers.",
            "It takes {mid} minutes to do what my old one did in {few}.",
            "It tripped the fuse twice.", "Something inside started rattling after a week.",
            "It leaks water all over the counter.", "It is impossible to clean properly.",
        ),
    ),
    Kind(
        things=("laptop", "phone", "tablet", "smartwatch", "camera", "e-reader", "drone",
                "portable speaker", "pair of headphones", "pair of earbuds", "fitness tracker",
                "electric toothbrush", "power bank", "handheld console", "electric scooter"),
        aspects=("battery life", "build quality", "software", "charging", "connectivity",
                 "setup", "updates", "customer support", "price", "design", "controls", "app",
                 "warranty", "packaging"),
        past=False, tried="owned", openers=_PRODUCT_OPENERS,
        positive=(
            "The battery easily lasts {mid} hours.",
            "Setup took {few} minutes and it just worked.", "It connected on the first try.",
            "It has not crashed once in {few} months.", "It charges fully in under an hour.",
            "Every update has made it better.",
            "Support answered my question within {mid} minutes.",
            "It still works perfectly after {few} drops.",
        ),
        negative=(
            "It freezes {few} times a day.", "The battery is dead by lunchtime.",
            "The connection drops every few minutes.", "It overheats after half an hour.",
            "Support kept me on hold for {mid} minutes.",
            "It died {few} days after the warranty ended.", "Every update makes it worse.",
            "The charging port stopped working in a month.",
        ),
    ),
    Kind(
        things=("rain jacket", "winter coat", "pair of jeans", "wool sweater", "swimsuit",
                "dress", "hoodie", "scarf", "pair of gloves", "pair of trainers",
                "pair of hiking boots", "shirt", "pair of pyjamas", "suit", "beanie"),
        aspects=("fit", "stitching", "material", "comfort", "sizing", "colour", "price",
                 "warmth", "style", "quality", "pockets", "buttons", "delivery", "packaging"),
        past=False, tried="owned", openers=_PRODUCT_OPENERS,
        positive=(
            "It still looks new after {mid} washes.",
            "I get compliments every time I wear it.", "It fits like it was made for me.",
            "It is comfortable enough to wear all day.",
            "I have already ordered it in {few} more colours.",
            "It survived a whole winter of daily wear.",
            "The colour is exactly as in the photos.", "It feels much pricier than it was.",
        ),
        negative=(
            "The seams split after {few} washes.",
            "The colour ran into everything else in the wash.",
            "The sizing is way off and returning it is a hassle.",
            "It shrank {few} sizes in the first wash.",
            "It started falling apart after {few} wears.",
            "It smells like chemicals even after {few} washes.",
            "A button came off the first time I wore it.",
            "It looks nothing like the photos.",
        ),
    ),
    Kind(
        things=("tent", "backpack", "sleeping bag", "suitcase", "umbrella", "bike helmet",
                "camping stove", "water bottle", "travel pillow", "head torch", "cool box",
                "hammock", "picnic blanket", "fishing rod", "kayak"),
        aspects=("weight", "straps", "durability", "waterproofing", "zips", "size", "price",
                 "materials", "design", "packaging", "instructions", "comfort", "colour",
                 "warranty"),
        past=False, tried="owned", openers=_PRODUCT_OPENERS,
        positive=(
            "It survived {few} trips without a scratch.",
            "It kept everything dry through a whole day of rain.",
            "It is lighter than it looks.",
            "It has already been on {few} camping trips with us.",
            "It packs away in seconds.", "It feels built to last for years.",
            "It has been through {mid} days of hard use and still looks new.",
            "My {who} borrowed it and immediately bought one.",
        ),
        negative=(
            "Something broke on the very first trip.", "Water got in within minutes.",
            "It is far heavier than the description says.",
            "A buckle snapped on day {few}.", "It fell apart after {few} trips.",
            "It smells like chemicals even after {few} days outside.",
            "Half the parts were missing from the box.",
            "It cracked the first time I dropped it.",
        ),
    ),
    Kind(
        things=("sofa", "mattress", "office chair", "desk lamp", "vacuum cleaner", "bookshelf",
                "duvet", "standing desk", "bed frame", "rug", "ceiling fan", "washing machine",
                "wardrobe", "dining table", "set of curtains"),
        aspects=("assembly", "comfort", "materials", "stability", "delivery", "size", "finish",
                 "smell", "instructions", "price", "design", "colour", "quality", "packaging"),
        past=False, tried="owned", openers=_PRODUCT_OPENERS,
        positive=(
            "It looks far more expensive than it was.",
            "The delivery team carried it upstairs and took the packaging away.",
            "It still looks as good as the day it arrived.",
            "It fits our living room perfectly.", "Our guests always ask where we got it.",
            "It was worth the {few} weeks of waiting.",
            "Setting it up took {mid} minutes with clear instructions.",
            "My {who} wants one for their flat now.",
        ),
        negative=(
            "Half the screws were missing from the box.",
            "Delivery was {few} weeks late and nobody called.",
            "The chemical smell has not gone after {mid} days.",
            "It looked nothing like the photos.", "It arrived scratched and dented.",
            "It started falling apart within {few} weeks.",
            "It took {few} phone calls to get a replacement part.",
            "It is so flimsy that I am afraid to use it.",
        ),
    ),
    Kind(
        things=("restaurant", "cafe", "bakery", "pizza place", "sushi bar", "tea room",
                "steakhouse", "noodle bar", "bistro", "wine bar", "brunch spot",
                "burger joint", "tapas bar", "curry house", "seafood restaurant"),
        aspects=("food", "service", "portions", "prices", "staff", "desserts", "coffee",
                 "atmosphere", "drinks", "menu", "music", "decor", "seating", "cocktails"),
        past=True, tried="eaten at", openers=_EATING_OPENERS,
        positive=(
            "Everything we ordered was full of flavour.",
            "Our waiter remembered every order without writing anything down.",
            "We got a table within {few} minutes on a Saturday night.",
            "They made a special dish for my {who}, who is vegan.",
            "Every plate came out hot and beautifully presented.",
            "The bill for {few} of us was under {mid} euros.",
            "The owner came over to ask how everything was.",
            "We ended up staying {few} hours.",
        ),
        negative=(
            "We waited {mid} minutes for cold food.", "The waiter ignored us all evening.",
            "The bill had {few} things we never ordered.", "My order arrived wrong, twice.",
            "There was a hair in my food.", "They ran out of half the menu by {few} pm.",
            "The tables were sticky and the floor was filthy.",
            "My {who} was sick the whole next day.",
        ),
    ),
    Kind(
        things=("hotel", "hostel", "guesthouse", "bed and breakfast", "holiday flat",
                "resort", "motel", "inn", "mountain lodge", "cabin", "boutique hotel",
                "beach house", "farm stay", "spa hotel", "airport hotel"),
        aspects=("staff", "rooms", "location", "cleanliness", "breakfast", "beds", "wifi",
                 "check-in", "view", "noise", "prices", "booking", "showers", "parking"),
        past=True, tried="stayed at", openers=_STAY_OPENERS,
        positive=(
            "The room was spotless and the bed was heavenly.",
            "The staff upgraded us for free.", "Check-in took {few} minutes.",
            "The view from our window was breathtaking.",
            "They let us check out at {few} pm at no extra cost.",
            "Breakfast had something for everyone.",
            "Everything was exactly as shown in the photos.",
            "We are already planning to come back next year.",
        ),
        negative=(
            "There was mould in the shower.", "The wifi never worked once.",
            "Street noise kept us awake until {few} am.",
            "We were charged {mid} euros for a kettle that was already broken.",
            "Nobody was at the desk when we arrived.", "The sheets had stains on them.",
            "Our booking had vanished and they shrugged.",
            "The room looked nothing like the photos.",
        ),
    ),
    Kind(
        things=("museum", "zoo", "spa", "gym", "hair salon", "theme park", "dentist",
                "language school", "aquarium", "swimming pool", "bowling alley", "escape room",
                "climbing centre", "yoga studio", "cinema"),
        aspects=("staff", "prices", "booking", "location", "cleanliness", "opening hours",
                 "queues", "parking", "facilities", "organisation", "value", "changing rooms",
                 "signage", "website"),
        past=True, tried="been to", openers=_VISIT_OPENERS,
        positive=(
            "The staff could not have been friendlier.",
            "Booking online took {few} minutes.", "Everything ran exactly on time.",
            "We spent {few} hours there and wanted more.",
            "It was spotless from top to bottom.",
            "They remembered my name on my second visit.",
            "My {who} has been going back every week since.",
            "It was worth every one of the {mid} euros.",
        ),
        negative=(
            "Nobody was at the desk when we arrived.",
            "We queued for {mid} minutes just to get in.",
            "Our booking had vanished and they shrugged.", "The place was filthy.",
            "We were charged {mid} euros extra without warning.",
            "Half of it was closed for repairs.",
            "The staff argued with each other in front of us.",
            "We left after {few} minutes.",
        ),
    ),
    Kind(
        things=("film", "novel", "documentary", "TV series", "video game", "comic",
                "audiobook", "memoir", "crime drama", "sitcom", "animated film",
                "fantasy novel", "thriller", "podcast", "graphic novel"),
        aspects=("plot", "acting", "pacing", "ending", "characters", "writing", "dialogue",
                 "visuals", "humour", "length", "story", "world-building", "twists",
                 "narration"),
        past=True, tried="come across", openers=_STORY_OPENERS,
        positive=(
            "I stayed up until {few} am to finish it.", "The ending gave me chills.",
            "I have already recommended it to {few} friends.",
            "Every episode left me wanting more.", "I laughed out loud more than once.",
            "The last {mid} minutes were unforgettable.", "I could not put it down.",
            "My {who} and I talked about it for days.",
        ),
        negative=(
            "I fell asleep after {mid} minutes.", "The dialogue was painfully wooden.",
            "I gave up halfway through.", "The twist was obvious from the start.",
            "Nothing happened for the first hour.", "It felt {mid} minutes too long.",
            "My {who} gave up on it after {few} minutes.",
            "I kept checking how much was left.",
        ),
    ),
    Kind(
        things=("concert", "gig", "festival", "stand-up show", "opera", "ballet", "circus",
                "magic show", "comedy night", "musical", "jazz night", "orchestra concert",
                "dance show", "open-air play", "puppet show"),
        aspects=("performers", "sound", "venue", "seats", "tickets", "setlist", "lighting",
                 "crowd", "organisation", "length", "costumes", "music", "atmosphere",
                 "support act"),
        past=True, tried="been to", openers=_SHOW_OPENERS,
        positive=(
            "The whole crowd was on its feet by the end.", "I got goosebumps more than once.",
            "We are still humming the songs {few} days later.",
            "The {mid} euro tickets were a bargain.", "It was over far too soon.",
            "The encore alone was worth the trip.",
            "My {who} cried, in a good way.", "I have already booked tickets for next year.",
        ),
        negative=(
            "We could barely hear anything from our seats.",
            "It started {mid} minutes late without a word of explanation.",
            "Half the audience left at the interval.", "The sound kept cutting out.",
            "We paid {mid} euros to stare at a pillar.",
            "The main act played for barely {mid} minutes.",
            "My {who} fell asleep in the second half.",
            "The queue for drinks took the whole break.",
        ),
    ),
)
# fmt: on

PLURAL_ASPECTS = frozenset({
    "controls", "instructions", "updates", "pockets", "buttons", "straps", "zips", "materials",
    "portions", "prices", "staff", "desserts", "drinks", "cocktails", "rooms", "beds",
    "showers", "characters", "visuals", "twists", "queues", "facilities", "opening hours",
    "changing rooms", "performers", "seats", "tickets", "costumes",
})  # fmt: skip
# Adjectives of degree take "very"-like intensifiers, extreme ones "absolutely"-like ones, and
# noun phrases none ("very a joke" is not English).
GRADABLE_POS = ("good", "great", "lovely", "impressive", "pleasant", "solid", "nice",
                "enjoyable", "satisfying", "polished", "classy", "charming")  # fmt: skip
EXTREME_POS = (
    "excellent", "superb", "wonderful", "fantastic", "outstanding", "brilliant", "terrific",
    "remarkable", "amazing", "fabulous", "perfect", "exceptional", "stellar", "magnificent",
    "phenomenal", "delightful", "marvellous", "splendid", "flawless", "first-rate", "top-notch",
    "gorgeous",
)  # fmt: skip
PHRASES_POS = ("spot on", "a delight", "a dream", "a real treat")
GRADABLE_NEG = ("bad", "poor", "disappointing", "mediocre", "frustrating", "underwhelming",
                "shoddy", "sloppy", "annoying", "weak", "unpleasant", "subpar")  # fmt: skip
EXTREME_NEG = (
    "awful", "terrible", "dreadful", "horrible", "abysmal", "atrocious", "lousy", "pathetic",
    "appalling", "dismal", "unacceptable", "rubbish", "laughable", "miserable", "dire",
    "woeful", "useless", "second-rate", "embarrassing", "hopeless", "diabolical", "disgraceful",
)  # fmt: skip
PHRASES_NEG = ("a joke", "a letdown", "a disaster", "a nightmare")
MODERATE = ("", "really ", "very ", "pretty ", "quite ", "extremely ", "incredibly ",
            "surprisingly ", "genuinely ", "seriously ", "remarkably ", "rather ")  # fmt: skip
ABSOLUTE = ("", "absolutely ", "truly ", "simply ", "honestly ", "just ", "utterly ")
_INTENSIFIERS = {
    **dict.fromkeys(GRADABLE_POS + GRADABLE_NEG, MODERATE),
    **dict.fromkeys(EXTREME_POS + EXTREME_NEG, ABSOLUTE),
    **dict.fromkeys(PHRASES_POS + PHRASES_NEG, ("",)),
}
_WORDS = {True: GRADABLE_POS + EXTREME_POS, False: GRADABLE_NEG + EXTREME_NEG}
_JUDGEMENTS = {True: _WORDS[True] + PHRASES_POS, False: _WORDS[False] + PHRASES_NEG}
LIKES = ("I love", "I adore", "I really like", "I am impressed by", "I cannot get enough of",
         "I am delighted with", "We loved", "I was won over by")  # fmt: skip
DISLIKES = ("I hate", "I cannot stand", "I really dislike", "I am fed up with",
            "I am disappointed by", "We hated", "I am annoyed by", "I was put off by")  # fmt: skip
STANDOUT_POS = ("What impressed me most was", "The real highlight was", "What stood out was",
                "My favourite part was")  # fmt: skip
STANDOUT_NEG = ("What annoyed me most was", "The worst part was", "What really let it down was",
                "My biggest complaint is")  # fmt: skip
VERDICTS_POS = (
    "Highly recommended.", "Five stars from me.", "I would choose it again.", "Worth every penny.",
    "I would recommend it to {people}.", "Could not be happier.", "Love it!",
    "Best money I have spent this year.", "My {who} loves it too.", "No complaints at all.",
    "A real gem.", "Go for it, you will not regret it.", "Ten out of ten.",
    "I have already told all my friends.", "Exactly what I hoped for.",
)  # fmt: skip
VERDICTS_NEG = (
    "Avoid.", "Save your money.", "One star, and that is generous.", "Not worth it.",
    "Never again.", "I would not recommend it to {people}.", "Completely disappointed.",
    "Do not waste your time.", "What a waste of money.", "I want a refund.",
    "My {who} hated it too.", "Stay away.", "Zero stars if I could.",
    "I have warned all my friends.", "Nothing like what was promised.",
)  # fmt: skip
EXCLAIM_POS = ("Wow.", "Simply great.", "Perfect.", "Spot on.", "So good!", "Brilliant!",
               "What a find.", "Delighted.", "Yes!")  # fmt: skip
EXCLAIM_NEG = ("Ugh.", "Yikes.", "Not impressed.", "Awful.", "What a mess.", "Terrible!",
               "Big mistake.", "Just no.", "Oh dear.")  # fmt: skip
SCORES_POS = ("{n}/10.", "{n} out of 10, easily.", "Rating: {n}/10.")
SCORES_NEG = ("{n}/10.", "{n} out of 10, and I am being kind.", "Rating: {n}/10.")
CONCESSIONS_POS = (
    "The {aspect} {be} not perfect, but the {aspect2} more than makes up for it.",
    "I was worried about the {aspect}, but I need not have been.",
    "The {aspect} could be better, yet I am very happy overall.",
)  # fmt: skip
CONCESSIONS_NEG = (
    "The {aspect} {be} fine, but that is about all I can say.",
    "I wanted to like the {aspect}, but {it} let me down.",
    "Sure, the {aspect} {be} okay, but the {aspect2} ruined it.",
)  # fmt: skip
WHEN = ("last week", "last month", "a few days ago", "yesterday", "over the weekend",
        "in January", "in March", "in May", "in July", "in September", "in November",
        "before Christmas", "on a whim", "after a long search", "two weeks ago",
        "this spring", "last autumn", "in the summer")  # fmt: skip
WHO = ("mum", "dad", "sister", "brother", "partner", "wife", "husband", "son", "daughter",
       "flatmate", "best friend", "boss", "colleague", "neighbour", "grandma", "grandad",
       "girlfriend", "boyfriend", "niece", "nephew", "uncle", "aunt")  # fmt: skip
PEOPLE = ("anyone", "everyone", "friends", "family", "beginners", "students", "parents",
          "commuters", "travellers", "families with kids", "colleagues", "professionals",
          "my neighbours", "people on a budget", "first-timers")  # fmt: skip
CITIES = ("Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Krakow", "Porto",
          "Dublin", "Seville", "Bergen", "Quito", "Tbilisi", "Valencia", "Zurich", "Chicago",
          "Denver", "Glasgow", "Leeds", "Lyon", "Munich", "Naples", "Osaka", "Perth", "Riga",
          "Sofia", "Tallinn", "Vienna", "Warsaw", "Yerevan")  # fmt: skip
OCCASIONS = ("birthday", "wedding", "anniversary", "graduation", "Christmas", "retirement",
             "housewarming", "Mother's Day", "Father's Day", "Valentine's Day", "engagement",
             "farewell")  # fmt: skip
_VOWEL_SOUND = ("a", "e", "i", "o", "u", "hour")


def _article(word: str) -> str:
    return "an" if word.lower().startswith(_VOWEL_SOUND) else "a"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Review:
    """Draws for one review: its kind, thing, polarity and slot fillers."""

    def __init__(self, rng: Draws, positive: bool) -> None:
        self.rng = rng
        self.positive = positive
        self.kind = rng.pick(KINDS)
        self.thing = rng.pick(self.kind.things)

    def aspects(self) -> tuple[str, str]:
        first = self.rng.pick(self.kind.aspects)
        second = self.rng.pick(self.kind.aspects)
        while second == first:
            second = self.rng.pick(self.kind.aspects)
        return first, second

    def be(self, aspect: str) -> str:
        plural = aspect in PLURAL_ASPECTS
        if self.kind.past:
            return "were" if plural else "was"
        return "are" if plural else "is"

    def judged(self, phrases: bool = True) -> str:
        """An adjective of the review's polarity with an optional intensifier ('pretty good',
        'absolutely superb') or, if `phrases`, a noun phrase ('a letdown')."""
        adj = self.rng.pick((_JUDGEMENTS if phrases else _WORDS)[self.positive])
        return self.rng.pick(_INTENSIFIERS[adj]) + adj

    def adjective(self) -> str:
        """A bare adjective of the review's polarity."""
        return self.rng.pick(_WORDS[self.positive])

    def fill(self, template: str) -> str:
        """The template with its slots filled (unused slots cost one draw each)."""
        rng = self.rng
        occasion = rng.pick(OCCASIONS)
        return template.format(
            thing=self.thing, when=rng.pick(WHEN), who=rng.pick(WHO), city=rng.pick(CITIES),
            occasion=occasion, a_occasion=f"{_article(occasion)} {occasion}",
            people=rng.pick(PEOPLE), few=rng.integers(2, 10), mid=rng.integers(10, 60),
        )  # fmt: skip

    def opener(self) -> str:
        return self.fill(self.rng.pick(self.kind.openers))

    def polar(self) -> str:
        """One sentence that carries the review's polarity."""
        rng, pos = self.rng, self.positive
        aspect, aspect2 = self.aspects()
        match rng.integers(_POLAR_KINDS):
            case 0:
                return f"The {aspect} {self.be(aspect)} {self.judged()}."
            case 1:
                return f"The {aspect} of this {self.thing} {self.be(aspect)} {self.judged()}."
            case 2:
                if rng.random() < 0.3:
                    return _capitalise(f"{aspect}: {self.judged()}.")
                return _capitalise(f"{self.adjective()} {aspect} and {self.adjective()} {aspect2}.")
            case 3:
                return f"{rng.pick(LIKES if pos else DISLIKES)} the {aspect}."
            case 4:
                return f"{rng.pick(STANDOUT_POS if pos else STANDOUT_NEG)} the {aspect}."
            case 5:
                better = rng.pick(("better", "nicer", "more reliable") if pos
                                  else ("worse", "flimsier", "less reliable"))  # fmt: skip
                if self.kind.tried == "owned":
                    return f"{rng.pick(('Much', 'Far', 'Way'))} {better} than my old {self.thing}."
                best = "best" if pos else "worst"
                return f"Easily the {best} {self.thing} I have {self.kind.tried} in years."
            case 6:
                templates = CONCESSIONS_POS if pos else CONCESSIONS_NEG
                it = "they" if aspect in PLURAL_ASPECTS else "it"
                return rng.pick(templates).format(aspect=aspect, aspect2=aspect2,
                                                  be=self.be(aspect), it=it)  # fmt: skip
            case _:  # concrete experiences: twice as likely as any other kind
                return self.fill(rng.pick(self.kind.positive if pos else self.kind.negative))

    def closing(self) -> str:
        rng, pos = self.rng, self.positive
        match rng.integers(4):
            case 0:
                judged = self.judged(phrases=False)
                return f"Overall, {_article(judged)} {judged} {self.thing}."
            case 1:
                template = rng.pick(SCORES_POS if pos else SCORES_NEG)
                return template.format(n=rng.integers(8, 11) if pos else rng.integers(1, 4))
            case _:
                return self.fill(rng.pick(VERDICTS_POS if pos else VERDICTS_NEG))


_POLAR_KINDS = 9  # kinds 0-6 once, experiences (7, 8) twice


def capacity() -> int:
    """A lower bound of distinct reviews: the one-sentence reviews 'The {aspect} of this
    {thing} is {intensifier}{adjective}.' alone (every other form only adds to it)."""
    pairs = sum(len(k.things) * len(k.aspects) for k in KINDS)
    judged = [sum(len(_INTENSIFIERS[a]) for a in _JUDGEMENTS[p]) for p in (True, False)]
    return 2 * pairs * min(judged)


def draw(rng: Draws, i: int) -> Example:
    """One review; classes alternate with i so any prefix is balanced."""
    positive = i % 2 == 0
    review = _Review(rng, positive)
    style = rng.random()
    if style < 0.08:  # a one-liner: an exclamation and one polar sentence
        words = rng.pick(EXCLAIM_POS if positive else EXCLAIM_NEG)
        sentences = [words, review.polar()] if rng.random() < 0.5 else [review.polar(), words]
    else:
        sentences = [review.opener()] if rng.random() < 0.45 else []
        n_polar = 1 + rng.integers(3)
        for _ in range(n_polar):
            sentence = review.polar()
            if sentence not in sentences:
                sentences.append(sentence)
        if rng.random() < 0.6:
            sentences.append(review.closing())
        if rng.random() < 0.1:
            sentences.append(rng.pick(EXCLAIM_POS if positive else EXCLAIM_NEG))
    label = "positive" if positive else "negative"
    text = " ".join(sentences)
    return Example(input=text, output=label, labels={"sentiment": label})


GENERATOR = BuiltinGenerator(capacity(), draw, "plain", "\n", ("negative", "positive"))
