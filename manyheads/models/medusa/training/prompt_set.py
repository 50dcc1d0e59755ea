"""The shipped Medusa prompt set (``prompts.jsonl``), built deterministically from our templates.

Why: the heads were data-starved. The first 216 prompts gave about 21k training positions, and
head accuracy was limited by that, not by the heads. This builder keeps those 216 unchanged (ids
0..215 and their train/eval splits, so earlier eval numbers stay comparable) and adds our own
varied prompts up to about 1500: for each category, templates crossed with subjects (or, for
reasoning, names and numbers), drawn with ``random.Random(0)``, de-duplicated, balanced across
the six categories, about 10% of each category held out as ``eval``.

A second round (``extend``) doubles the set to 3000 without touching the first 1500: 250 more
per category, all ``train``, so the held-out prompts and every eval number stay comparable. Why:
trained to the end of their schedule on 1500 prompts, the heads' loss fell at each epoch boundary
(memorising) while held-out accuracy barely rose.

Run ``python -m manyheads.models.medusa.training.prompt_set`` to rewrite ``prompts.jsonl``;
the output is the same on every run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROMPTS_FILE = Path(__file__).parent / "prompts.jsonl"
BASE_COUNT = 216  # the original prompts, kept verbatim as ids 0..215
TOTAL = 1500
EXTENDED = 3000  # after ``extend``
EVAL_SHARE = 0.1
CATEGORIES = ("chat", "persona", "instruct", "scene", "persuasion", "reasoning")

Fill = Callable[[random.Random], dict[str, object]]


@dataclass(frozen=True)
class Group:
    """Templates that share one way of filling their slots."""

    templates: tuple[str, ...]
    fill: Fill


def pick(**pools: list[str]) -> Fill:
    """A filler choosing one entry of each pool per slot."""
    return lambda rng: {slot: rng.choice(pool) for slot, pool in pools.items()}


# -- chat: everyday advice and small talk ------------------------------------------------------
CHAT_TEMPLATES = (
    "I keep putting off {topic}. Any gentle advice to get going?",
    "What mistakes do beginners usually make when {topic}?",
    "A friend of mine is anxious about {topic}. What could I say to help?",
    "Give me a quick, practical plan for {topic} this week.",
    "Is it worth {topic}? Tell me honestly what you think.",
    "What is one small thing I could do today to make {topic} easier?",
    "How do people on a tight budget manage {topic}?",
    "I tried {topic} last month and gave up. How can I try again without feeling discouraged?",
    "What questions should I ask myself before {topic}?",
    "Break {topic} into three easy first steps for me.",
    "What would a patient friend tell someone who is new to {topic}?",
    "How much time should I set aside for {topic} each week?",
    "Share a few encouraging words for someone {topic} for the first time.",
    "Do I need to buy anything special before {topic}?",
    "Keep it short: how do I stay motivated while {topic}?",
    "What do people tend to enjoy most about {topic}?",
)
CHAT_TOPICS = [
    "keeping a journal", "learning to play the ukulele", "cutting down on sugar",
    "waking up earlier", "running a first 5K", "decluttering a garage",
    "cooking for a large family gathering", "starting a balcony herb garden", "learning to knit",
    "budgeting for a holiday", "taking a solo trip", "adopting an older dog",
    "switching careers at forty", "speaking up in meetings", "building a reading habit",
    "meal-prepping for the week", "learning basic car maintenance",
    "volunteering at an animal shelter", "teaching a child to ride a bike", "repainting a fence",
    "writing a short story", "practising meditation", "looking after a fish tank",
    "planning a family reunion", "baking bread at home", "joining a community choir",
    "reducing screen time", "keeping in touch with old friends", "organising digital photos",
    "learning to draw portraits", "starting a small online shop",
    "preparing for a long-haul flight", "cycling to work", "hosting a dinner party",
    "learning to touch-type", "growing tomatoes on a windowsill",
    "getting back into fitness after an injury", "moving in with a roommate", "learning chess",
    "sewing a simple tote bag", "keeping a home office tidy", "choosing good hiking boots",
    "studying for a driving test", "learning to juggle", "making a family photo album",
]

# -- persona: role play ------------------------------------------------------------------------
PERSONA_TEMPLATES = (
    "You are {role}. Stay in character and describe an ordinary morning at work.",
    "Pretend to be {role} and tell a newcomer the one rule they must never break.",
    "Speaking as {role}, explain what people usually get wrong about your job.",
    "Take on the voice of {role} and recall the strangest day you have ever had.",
    "You are {role}. A visitor asks what you love most about your work. Answer in character.",
    "Play {role} who has just received some surprising news. React in a few lines.",
    "As {role}, give a short welcome speech to a group of new apprentices.",
    "Write a brief interview in which a local reporter questions {role} about their work.",
    "Imagine you are {role} writing a diary entry at the end of a long day. What do you write?",
    "In the voice of {role}, describe the tools you could not do without.",
    "You are {role}, and a child asks how to become one. Reply in character.",
    "Write a short dialogue between {role} and a curious tourist.",
    "Pretend you are {role} and grumble, good-naturedly, about today's weather.",
    "Stay in character as {role} and offer one piece of advice about life.",
    "As {role}, describe the moment you knew you had chosen the right path.",
)
PERSONA_ROLES = [
    "a retired sea captain", "a night-shift baker", "a beekeeper",
    "a mountain rescue volunteer", "a sleepy dragon guarding a library",
    "a time traveller from the year 3000", "a small-town mail carrier",
    "an overworked wedding planner", "a court jester", "a ghost who haunts a museum",
    "a zookeeper", "an archaeologist", "a train conductor", "a clockmaker", "a submarine cook",
    "a park ranger", "a veteran taxi driver", "a robot butler", "a medieval blacksmith",
    "a circus acrobat", "a florist", "a deep-sea diver", "a school bus driver",
    "a fortune teller", "a pastry chef", "a hotel concierge", "a retired opera singer",
    "a polar researcher", "a goat farmer", "a comic-book artist", "an ice-cream truck driver",
    "a wizard's apprentice", "a bicycle courier", "a cheerful dentist", "a weary knight",
    "a puppeteer", "a tea-shop owner", "an astronaut on the Moon", "a tailor",
    "a theatre stagehand", "a late-night radio host", "a marine biologist",
    "a pigeon who lives in a train station", "a chess grandmaster", "a village blacksmith's cat",
]

# -- instruct: explanations and short writing tasks ---------------------------------------------
EXPLAIN_TEMPLATES = (
    "Explain {concept} in plain language.",
    "Give me three interesting facts about {concept}.",
    "Explain {concept} to a curious ten-year-old.",
    "Write a short encyclopedia-style paragraph on {concept}.",
    "Summarise what someone should know about {concept} in four bullet points.",
    "What are the most common misunderstandings about {concept}?",
    "Compare {concept} to something from everyday life to make it easy to grasp.",
    "Write a short quiz with three questions about {concept}, then give the answers.",
)
CONCEPTS = [
    "how tides work", "the printing press", "compound interest", "how a rainbow forms",
    "the immune system", "how aeroplanes stay in the air", "recycling plastic",
    "the history of the bicycle", "how bread rises", "electricity in a home",
    "why leaves change colour", "how a camera works", "the phases of the Moon", "earthquakes",
    "groundwater", "what a calorie is", "how maps are made", "the role of bees in farming",
    "how a battery stores energy", "what an election is", "how sound travels",
    "the Roman aqueducts", "why we dream", "how glass is made", "what a spreadsheet is for",
    "fossils", "how a thermostat works", "why the ocean is salty", "what inflation means",
    "how new medicines are tested", "the solar system", "how a lock and key work",
    "coral reefs", "what an ecosystem is", "the Great Wall of China", "how paper is made",
    "how computers store pictures", "why cats purr", "how a bill becomes a law",
    "the life cycle of a butterfly",
]
WRITE_TEMPLATES = (
    "Write {piece}.",
    "Write {piece}. Keep it under 100 words.",
    "Draft {piece} in a warm, friendly tone.",
    "Write {piece}, then suggest one way to improve it.",
    "Write {piece}, short enough to take in at a glance.",
    "Write two different versions of {piece}.",
)
PIECES = [
    "a thank-you note to a teacher who is retiring", "a short poem about a forgotten umbrella",
    "a product description for a folding bicycle",
    "an email asking a landlord to fix a leaking tap", "a to-do list for moving house",
    "a short fable about a fox and a scarecrow", "a recipe for a simple vegetable soup",
    "a text message cancelling plans politely", "a toast for a friend's wedding",
    "a packing list for a weekend by the sea", "a limerick about a clumsy giraffe",
    "a notice about a lost set of keys", "the opening of a cover letter for a job at a bookshop",
    "a bedtime story about a brave snail", "a set of rules for a family game night",
    "a review of an imaginary science museum",
    "an apology to a neighbour for a noisy party",
    "instructions for watering houseplants while someone is away",
    "an encouraging note for a friend before an exam", "a menu for a small café",
    "a short news report about a village pumpkin contest",
    "a welcome message for new members of a chess club", "a haiku about the first snowfall",
    "a postcard from a holiday in the mountains", "a job advert for a dog walker",
    "a riddle with its answer", "a checklist for a safe campfire",
    "an invitation to a backyard barbecue",
    "a note reminding flatmates to take out the recycling",
    "a short biography of an imaginary inventor", "a weekly study timetable for a student",
    "a sign asking visitors to keep off the grass", "a love letter from a robot to a toaster",
    "a description of an imaginary board game", "a polite complaint about a late delivery",
]

# -- scene: description ------------------------------------------------------------------------
SCENE_TEMPLATES = (
    "Describe {place} in a short, vivid paragraph.",
    "Write a few sentences about {place}, focusing on sounds and smells.",
    "Paint a picture in words of {place} as seen by someone arriving for the first time.",
    "Describe {place} just as the light begins to fade.",
    "Set the scene for a story that begins in {place}.",
    "Write a calm, unhurried description of {place}.",
    "Describe {place} through the eyes of a cat watching from a corner.",
    "In five sentences, capture the mood of {place}.",
    "Describe {place} a moment before something unexpected happens.",
    "Write the opening paragraph of a mystery set in {place}.",
    "Describe {place} using all five senses.",
    "Write a short description of {place} for a travel brochure.",
    "Describe {place} in the middle of the night.",
    "Describe {place} so that the reader feels its atmosphere without being told.",
)
PLACES = [
    "a crowded ferry crossing a grey sea", "an old clock-repair shop",
    "a hillside vineyard at harvest", "a flooded meadow in spring", "a busy hospital kitchen",
    "a quiet monastery courtyard", "a roadside diner on a long highway",
    "a derelict amusement park", "a coral reef", "a train platform at rush hour",
    "a snowed-in mountain village", "a tiny attic bedroom", "a spice market",
    "a school gym during a dance", "a fire lookout tower", "a desert oasis",
    "a factory floor at shift change", "a rowing club boathouse", "a rain-soaked city alley",
    "a lavender field", "a hot-air balloon festival", "an underground cave with a lake",
    "a small harbour at low tide", "a pottery studio", "a royal ballroom",
    "a campsite beside a river", "a second-hand record shop", "a sheep farm in the hills",
    "a greenhouse on a space colony", "a seaside town in winter", "an observatory dome",
    "a recycling centre", "a packed football stadium", "a glasshouse in a botanical garden",
    "a ghost town in the desert", "a bamboo forest", "an ice hotel", "a vegetable allotment",
    "a tram depot", "a village fair", "a jazz club", "a sunflower farm",
    "a newspaper office on deadline", "a rooftop café", "a canyon at sunrise",
    "a marsh full of birds", "a toy factory", "an old theatre dressing room",
    "a laundromat late at night", "a subway tunnel under construction",
]

# -- persuasion ----------------------------------------------------------------------------------
PERSUASION_TEMPLATES = (
    "Convince a doubtful friend to {action}.",
    "Write a short persuasive paragraph urging people to {action}.",
    "Give three strong reasons to {action}.",
    "Write a one-minute speech encouraging your neighbours to {action}.",
    "Persuade a busy parent to {action}.",
    "Make a friendly but firm case that students should {action}.",
    "A coworker thinks it is pointless to {action}. Change their mind.",
    "Write a catchy poster slogan, plus a sentence or two, urging readers to {action}.",
    "Argue that everyone should {action}, and answer one likely objection.",
    "Write a short letter to the local newspaper calling on readers to {action}.",
    "Persuade your grandparents to {action}.",
    "In a few sentences, convince me that I should {action}.",
)
ACTIONS = [
    "take up gardening", "learn a musical instrument", "donate blood",
    "walk more and drive less", "keep a reusable shopping bag", "learn a second language",
    "spend one evening a week without screens", "try a new sport", "visit a local museum",
    "cook a meal from scratch each week", "join a book club",
    "repair things instead of replacing them", "plant a tree", "learn to code",
    "save a little money each month", "get more sleep", "take the stairs",
    "try camping at least once", "shop at farmers' markets", "write a letter to an old friend",
    "read the news from more than one source", "volunteer for a day each year",
    "adopt a pet rather than buy one", "turn off lights when leaving a room",
    "drink water instead of soda", "take a proper lunch break", "learn to swim",
    "compost kitchen scraps", "use public transport", "keep a gratitude journal",
    "visit elderly relatives more often", "stretch every morning", "go birdwatching",
    "carry a small first-aid kit", "borrow tools instead of buying them",
    "try a vegetarian meal once a week", "take a walk after dinner",
    "attend a local town meeting", "back up important files", "learn to sew on a button",
    "spend time in nature every weekend", "play board games with family",
    "practise public speaking", "learn to cook one new dish a month",
]

# -- reasoning: small word problems (names and numbers) and step-by-step explanations ----------
NAMES = [
    "Amara", "Ben", "Chloe", "Dev", "Elena", "Finn", "Grace", "Hiro", "Isla", "Jonas", "Kemi",
    "Leo", "Maya", "Nico", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Victor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Aiden", "Bea", "Carlos", "Dina",
]
ITEMS = [
    "apples", "marbles", "pencils", "stickers", "cupcakes", "seashells", "bottle caps",
    "postcards", "books", "buttons", "oranges", "toy cars", "crayons", "tennis balls", "cookies",
    "plant pots", "candles", "coins", "paper cranes", "eggs", "rubber ducks", "cards",
    "bananas", "shells", "beads", "muffins", "stamps", "socks", "lemons", "kites",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WORD_PROBLEMS = (
    "{name} packs {a} boxes with {b} {item} in each, then {name2} adds {c} more. "
    "How many {item} are there in total? Show each step.",
    "{ab} {item} are shared equally among {a} friends. How many does each friend get? Explain.",
    "What is {p} percent of {n}? Show how you work it out.",
    "A train travels at {speed} km per hour for {hours} hours. How far does it go? "
    "Explain your reasoning.",
    "{name} buys {a} notebooks at {price} dollars each and pays with a 100-dollar note. "
    "How much change should {name} get? Solve it step by step.",
    "If today is {day}, what day of the week will it be in {k} days? Reason it out.",
    "{name} is {a} years older than {name2}. In {b} years their ages will add up to {ages}. "
    "How old is each of them now? Work it out carefully.",
    "A jacket costs {n} dollars and is discounted by {p} percent. What is the new price? "
    "Show the steps.",
    "{name} reads {b} pages every day. How many days will it take to finish a book of "
    "{pages} pages? Explain.",
    "A rectangle is {a} metres wide and {b} metres long. What are its area and perimeter? "
    "Work through it.",
    "{name} saves {price} dollars a week. How many weeks until there is enough for a bike "
    "costing {total} dollars? Explain.",
    "A recipe uses {b} spoons of sugar for every {a} cakes. How much sugar is needed for "
    "{cakes} cakes? Show your reasoning.",
    "{name}, {name2} and {name3} run a race. {name} is not last, and {name2} finishes ahead "
    "of {name}. Who comes third? Explain.",
    "{name} is taller than {name2}, and {name2} is taller than {name3}. Who is the shortest? "
    "Explain your reasoning.",
    "{name} has {c} {item} and gives a third of them to {name2}, rounding down. "
    "How many does {name} keep? Think step by step.",
)
WHY_TEMPLATES = (
    "Why {why}? Reason it out step by step.",
    "Explain, with a short chain of reasoning, why {why}.",
    "A child asks why {why}. Give a careful, step-by-step answer.",
    "Think it through: why {why}?",
)
WHYS = [
    "do puddles dry faster on windy days", "does a balloon shrink in a cold car",
    "can we see our breath in winter", "does bread go stale",
    "does a spoon look bent in a glass of water", "do ice cubes crack in a warm drink",
    "does the Moon seem to change shape", "does metal feel colder than wood in the same room",
    "are shadows longest early in the morning", "can a steel ship float",
    "do onions make people cry", "does a bicycle pump get warm",
    "are days longer in summer", "does salt help melt ice on roads",
    "does sound seem to carry further at night", "does a candle go out under a jar",
    "do dark clothes feel hotter in the sun", "does a ball bounce lower each time",
    "does honey keep for so long", "does the sea look blue",
    "is wet sand firmer than dry sand", "does a kettle whistle", "does popcorn pop",
    "do many trees drop their leaves in autumn", "do your hands warm up when you rub them",
    "does a paper plane eventually come down", "does the sky turn red at sunset",
    "does a cut apple turn brown", "do we feel colder when the wind blows",
    "does a straw let you drink from a glass",
]


def _numbers(rng: random.Random) -> dict[str, object]:
    """Names, items and numbers for the word problems, chosen so every answer is clean."""
    name, name2, name3 = rng.sample(NAMES, 3)
    a, b, c = rng.randint(2, 9), rng.randint(3, 12), rng.randint(4, 40)
    k, m = rng.randint(3, 30), rng.randint(2, 5)
    price = rng.randint(2, 10)
    younger = rng.randint(5, 30)
    return {
        "name": name, "name2": name2, "name3": name3, "item": rng.choice(ITEMS),
        "a": a, "b": b, "c": c, "k": k, "ab": a * b, "price": price,
        "p": rng.choice([10, 20, 25, 30, 40, 50, 75]), "n": 20 * rng.randint(2, 20),
        "speed": rng.choice([30, 40, 45, 50, 60, 70, 80, 90]),
        "hours": rng.choice(["1.5", "2", "2.5", "3", "4"]), "day": rng.choice(DAYS),
        "ages": 2 * younger + a + 2 * b, "pages": b * k, "total": price * k, "cakes": a * m,
    }


GROUPS: dict[str, tuple[Group, ...]] = {
    "chat": (Group(CHAT_TEMPLATES, pick(topic=CHAT_TOPICS)),),
    "persona": (Group(PERSONA_TEMPLATES, pick(role=PERSONA_ROLES)),),
    "instruct": (Group(EXPLAIN_TEMPLATES, pick(concept=CONCEPTS)),
                 Group(WRITE_TEMPLATES, pick(piece=PIECES))),
    "scene": (Group(SCENE_TEMPLATES, pick(place=PLACES)),),
    "persuasion": (Group(PERSUASION_TEMPLATES, pick(action=ACTIONS)),),
    "reasoning": (Group(WORD_PROBLEMS, _numbers), Group(WHY_TEMPLATES, pick(why=WHYS))),
}


def _draw(rng: random.Random, groups: tuple[Group, ...], count: int, seen: set[str]) -> list[str]:
    """``count`` new prompts of one category, none already in ``seen`` (updated)."""
    weights = [len(g.templates) for g in groups]
    out: list[str] = []
    for _ in range(200 * count):
        if len(out) == count:
            return out
        group = rng.choices(groups, weights)[0]
        text = rng.choice(group.templates).format(**group.fill(rng))
        text = text[0].upper() + text[1:]
        if text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    raise RuntimeError(f"only {len(out)} distinct prompts for a category that needs {count}")


def build(base: list[dict], total: int = TOTAL, seed: int = 0) -> list[dict]:
    """``base`` (the original prompts, unchanged) followed by new ones up to ``total``, a tenth
    of each category held out for evaluation."""
    return _add(base, total, seed, EVAL_SHARE)


def extend(rows: list[dict], total: int = EXTENDED, seed: int = 1) -> list[dict]:
    """``rows`` unchanged, then new ``train`` prompts up to ``total``: more training data, the
    same held-out prompts."""
    return _add(rows, total, seed, 0.0)


def _add(rows: list[dict], total: int, seed: int, eval_share: float) -> list[dict]:
    """``rows`` then new prompts up to ``total``, balanced by category, shuffled together."""
    if [r["id"] for r in rows] != list(range(len(rows))):
        raise ValueError("prompts must have ids 0..n-1 in order")
    rng = random.Random(seed)
    per_category = total // len(CATEGORIES)
    seen = {r["prompt"].lower() for r in rows}
    new: list[dict] = []
    for category in CATEGORIES:
        have = sum(r["category"] == category for r in rows)
        texts = _draw(rng, GROUPS[category], max(0, per_category - have), seen)
        # sampling none draws nothing, so the train-only extension keeps its random stream
        held_out = set(rng.sample(range(len(texts)), round(eval_share * len(texts))))
        new += [{"category": category, "split": "eval" if i in held_out else "train",
                 "prompt": text} for i, text in enumerate(texts)]
    rng.shuffle(new)  # mix categories within each generation batch
    return list(rows) + [{"id": len(rows) + i, **r} for i, r in enumerate(new)]


def main(path: Path = PROMPTS_FILE) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    base = [r for r in rows if r["id"] < BASE_COUNT]
    prompts = extend(build(base))
    path.write_text("".join(json.dumps(r) + "\n" for r in prompts))
    counts = {c: sum(r["category"] == c for r in prompts) for c in CATEGORIES}
    held = sum(r["split"] == "eval" for r in prompts)
    print(f"{len(prompts)} prompts ({held} eval) written to {path}: {counts}")


if __name__ == "__main__":
    main()
