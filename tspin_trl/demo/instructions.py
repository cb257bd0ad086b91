"""
Verifiable instruction following, in the spirit of IFEval but sized for a 135M-parameter instruct model.

Short prompts (one sentence about a simple topic plus one verifiable instruction) and short annotated responses that
are generated programmatically and always satisfy their instruction ([`make_instruction_dataset`]). Each kind of
instruction has a checker in [`INSTRUCTION_CHECKERS`]; [`~tspin_trl.demo.check_instruction`] reads a row's
`instruction` column and calls it.
"""

import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from datasets import DatasetDict

from .rows import build_splits


PAPER_PROMPT_TEMPLATE = "### Instruction: {prompt}\n\n### Response: "
"""Plain-text prompt template of the T-SPIN paper, used by the non-conversational instruction dataset."""

INSTRUCTION_KINDS = (
    "word_count",
    "include_keyword",
    "uppercase",
    "lowercase",
    "bullet_list",
    "json_keys",
    "end_phrase",
    "no_commas",
    "start_word",
    "one_word",
)
"""Kinds of verifiable instructions of the instruction-following task, in a fixed order."""

# ----------------------------------------------------------------------------------------------------------------------
# Topics
# ----------------------------------------------------------------------------------------------------------------------

# Each topic: (prompt name, determiner, noun, plural, category, adjectives, facts). A sentence subject is
# `determiner + noun` ("the ocean", "cats", "Paris"); facts are verb phrases that agree with the subject. No fact or
# adjective contains a comma or a digit, so that every generated sentence is comma-free and its word count is simple.
_TOPIC_TABLE: tuple[tuple[str, str, str, bool, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("cats", "", "cats", True, "animal", ("small", "furry", "curious", "playful"),
     ("purr when happy", "chase small mice", "sleep most of the day", "love warm sunny spots", "land on their feet")),
    ("dogs", "", "dogs", True, "animal", ("loyal", "friendly", "playful", "smart"),
     ("wag their tails", "love long walks", "guard the house", "fetch sticks and balls", "have a strong nose")),
    ("elephants", "", "elephants", True, "animal", ("huge", "gentle", "wise", "gray"),
     ("have long trunks", "never forget faces", "live in big herds", "eat many plants", "flap their big ears")),
    ("owls", "", "owls", True, "animal", ("quiet", "wise", "sharp", "patient"),
     ("hunt at night", "turn their heads far", "have big eyes", "fly without sound", "eat small rodents")),
    ("penguins", "", "penguins", True, "animal", ("cute", "clumsy", "social", "hardy"),
     ("cannot fly", "swim very fast", "live in cold places", "eat fresh fish", "waddle on the ice")),
    ("horses", "", "horses", True, "animal", ("strong", "fast", "graceful", "calm"),
     ("run across open fields", "eat hay and grass", "carry riders", "sleep standing up", "live in herds")),
    ("bees", "", "bees", True, "animal", ("busy", "small", "striped", "helpful"),
     ("make sweet honey", "visit many flowers", "live in hives", "carry pollen", "buzz all day")),
    ("apples", "", "apples", True, "fruit", ("crisp", "sweet", "juicy", "red"),
     ("grow on trees", "make good pies", "keep doctors away", "come in many colors", "taste fresh in autumn")),
    ("bananas", "", "bananas", True, "fruit", ("yellow", "soft", "sweet", "curved"),
     ("grow in bunches", "give quick energy", "have thick peels", "ripen very fast", "grow in warm places")),
    ("oranges", "", "oranges", True, "fruit", ("round", "juicy", "bright", "tangy"),
     ("grow in sunny groves", "make fresh juice", "split into segments", "smell fresh and sweet", "have bumpy peels")),
    ("strawberries", "", "strawberries", True, "fruit", ("red", "sweet", "small", "bright"),
     ("grow close to the ground", "have seeds outside", "taste great with cream", "ripen in early summer",
      "smell sweet")),
    ("grapes", "", "grapes", True, "fruit", ("small", "round", "sweet", "green"),
     ("grow on vines", "make juice and wine", "come in bunches", "turn into raisins", "taste cool and fresh")),
    ("the color blue", "", "blue", False, "color", ("calm", "cool", "deep", "peaceful"),
     ("fills the clear sky", "colors the deep sea", "feels calm and cool", "is a primary color",
      "is popular for jeans")),
    ("the color red", "", "red", False, "color", ("bright", "warm", "bold", "strong"),
     ("signals danger", "is the color of fire", "shows love and passion", "makes things stand out",
      "is a primary color")),
    ("the color green", "", "green", False, "color", ("fresh", "natural", "calm", "lush"),
     ("covers fields and forests", "means go at lights", "is the color of grass", "feels fresh and alive",
      "shows growth")),
    ("Paris", "", "Paris", False, "city", ("romantic", "old", "busy", "elegant"),
     ("has the Eiffel Tower", "sits on the Seine", "is famous for art", "has many cafes", "is the capital of France")),
    ("Tokyo", "", "Tokyo", False, "city", ("huge", "modern", "busy", "clean"),
     ("is the capital of Japan", "has fast trains", "mixes old and new", "has great food", "never really sleeps")),
    ("London", "", "London", False, "city", ("old", "rainy", "busy", "historic"),
     ("sits on the Thames", "has red buses", "is the capital of England", "has many museums", "has Big Ben")),
    ("Rome", "", "Rome", False, "city", ("ancient", "sunny", "historic", "lively"),
     ("has the Colosseum", "is full of ruins", "is the capital of Italy", "serves great pasta", "has many fountains")),
    ("rain", "", "rain", False, "weather", ("wet", "cool", "gentle", "heavy"),
     ("falls from gray clouds", "waters the plants", "fills the rivers", "makes puddles on roads",
      "cools the warm air")),
    ("snow", "", "snow", False, "weather", ("white", "cold", "soft", "quiet"),
     ("falls in winter", "covers the ground", "melts in the sun", "makes roads slippery", "is fun for sledding")),
    ("the wind", "the", "wind", False, "weather", ("strong", "cool", "wild", "fresh"),
     ("moves the clouds", "turns windmills", "shakes the trees", "carries seeds far", "cools hot days")),
    ("the sun", "the", "sun", False, "nature", ("bright", "hot", "huge", "golden"),
     ("gives us light", "warms the earth", "rises in the east", "sets in the west", "helps plants grow")),
    ("the ocean", "the", "ocean", False, "nature", ("vast", "deep", "blue", "salty"),
     ("holds many fish", "has strong waves", "covers most of Earth", "shapes the weather", "hides many secrets")),
    ("mountains", "", "mountains", True, "nature", ("tall", "rocky", "steep", "cold"),
     ("touch the clouds", "have snowy peaks", "attract many hikers", "rise above valleys", "are hard to climb")),
    ("forests", "", "forests", True, "nature", ("green", "quiet", "dense", "shady"),
     ("are full of trees", "shelter many animals", "clean the air", "have tall old trees", "give us wood")),
    ("bread", "", "bread", False, "food", ("fresh", "warm", "soft", "tasty"),
     ("comes from wheat", "is baked in ovens", "goes well with butter", "smells great", "makes good sandwiches")),
    ("pizza", "", "pizza", False, "food", ("cheesy", "hot", "tasty", "round"),
     ("comes from Italy", "has many toppings", "is baked in hot ovens", "is great for sharing",
      "has a crispy crust")),
    ("bicycles", "", "bicycles", True, "vehicle", ("light", "quiet", "cheap", "fun"),
     ("have two wheels", "need no fuel", "keep riders fit", "are good for short trips", "have pedals and gears")),
    ("trains", "", "trains", True, "vehicle", ("long", "fast", "loud", "heavy"),
     ("run on tracks", "carry many people", "move heavy cargo", "stop at stations", "connect big cities")),
    ("summer", "", "summer", False, "season", ("hot", "sunny", "bright", "long"),
     ("brings long days", "is time for beaches", "makes fruit ripe", "follows spring", "is great for swimming")),
    ("winter", "", "winter", False, "season", ("cold", "dark", "snowy", "quiet"),
     ("brings short days", "follows autumn", "is time for coats", "can bring snow", "ends with spring")),
    ("soccer", "", "soccer", False, "sport", ("popular", "fast", "exciting", "global"),
     ("uses a round ball", "has eleven players per team", "is played worldwide", "needs two goals",
      "draws huge crowds")),
    ("the piano", "the", "piano", False, "music", ("grand", "classic", "loud", "elegant"),
     ("has black and white keys", "can play many notes", "makes lovely music", "needs regular tuning",
      "is hard to master")),
    ("roses", "", "roses", True, "plant", ("red", "fragrant", "pretty", "thorny"),
     ("have sharp thorns", "smell very sweet", "bloom in summer", "stand for love", "grow in gardens")),
)  # fmt: skip

# Words never used as a required keyword (too generic to make the instruction meaningful).
_STOPWORDS = frozenset(
    ("about", "above", "across", "also", "away", "close", "from", "have", "into", "many", "more", "most", "much")
    + ("over", "their", "them", "they", "this", "very", "when", "with", "without")
)

_OPENERS = (
    "Describe {name}.",
    "Tell me about {name}.",
    "Write a short note about {name}.",
    "Say something about {name}.",
    "What do you know about {name}?",
    "Give a short description of {name}.",
)
_ONE_WORD_OPENERS = (
    "What is one word that describes {name}?",
    "Which word best describes {name}?",
    "Name a quality of {name}.",
    "Pick an adjective for {name}.",
    "How would you describe {name}?",
)
_INSTRUCTION_PHRASES: dict[str, tuple[str, ...]] = {
    "word_count": (
        "Use exactly {n} words.",
        "Answer in exactly {n} words.",
        "Your answer must be exactly {n} words long.",
    ),
    "include_keyword": (
        'Include the word "{keyword}" in your answer.',
        'Make sure to use the word "{keyword}".',
        'Your answer must contain the word "{keyword}".',
    ),
    "uppercase": ("Write your answer in all capital letters.", "Use only uppercase letters.", "Reply in all caps."),
    "lowercase": (
        "Write your answer in all lowercase letters.",
        "Use only lowercase letters.",
        "Do not use any capital letters.",
    ),
    "bullet_list": (
        'Answer with exactly {n} bullet points that start with "- ".',
        'Use exactly {n} bullet points, each on its own line starting with "- ".',
    ),
    "json_keys": (
        "Reply with a JSON object that has exactly the keys {keys}.",
        "Answer only with a JSON object with the keys {keys}.",
    ),
    "end_phrase": ('End your answer with the exact phrase "{phrase}"', 'Finish your reply with "{phrase}"'),
    "no_commas": ("Do not use any commas.", "Avoid commas in your answer.", "Your reply must not contain commas."),
    "start_word": ('Start your answer with the word "{word}".', 'Begin your reply with "{word}".'),
    "one_word": ("Answer with one word only.", "Reply with a single word.", "Use just one word."),
}
_JSON_KEYS = ("topic", "category", "trait", "fact")
_END_PHRASES = ("That is all.", "Thank you.", "Hope this helps.", "The end.", "Have a nice day.")
_START_WORDS = ("Indeed", "Well", "Sure", "Honestly", "Yes", "Truly", "Certainly", "Notably")
_WORD_COUNT_RANGE = (3, 8)
_BULLET_RANGE = (2, 4)


class _Topic:
    """One topic with its vocabulary and every candidate sentence (in mid-sentence casing, e.g. "the ocean ...")."""

    def __init__(
        self,
        name: str,
        det: str,
        noun: str,
        plural: bool,
        category: str,
        adjectives: tuple[str, ...],
        facts: tuple[str, ...],
    ) -> None:
        self.name = name
        self.noun = noun
        self.category = category
        self.adjectives = adjectives
        self.facts = facts
        self.subject = f"{det} {noun}" if det else noun
        self.pronoun = "they" if plural else "it"
        be = "are" if plural else "is"
        sentences: list[str] = []
        for fact in facts:
            sentences.append(f"{self.subject} {fact}.")
        for adj in adjectives:
            sentences.append(f"{self.subject} {be} {adj}.")
        for adj in adjectives:
            for adj2 in adjectives:
                if adj != adj2:
                    sentences.append(f"{self.subject} {be} {adj} and {adj2}.")
        for fact in facts:
            for fact2 in facts:
                if fact != fact2:
                    sentences.append(f"{self.subject} {fact} and {fact2}.")
        for adj in adjectives:
            for fact in facts:
                adj_subject = f"{det} {adj} {noun}" if det else f"{adj} {noun}"
                sentences.append(f"{adj_subject} {fact}.")
                sentences.append(f"{self.subject} {be} {adj}. {_capitalize(self.pronoun)} {fact}.")
        self.sentences = tuple(sentences)
        keywords: list[str] = []
        for word in " ".join(facts + adjectives).split():
            is_content = len(word) >= 4 and word.isalpha() and word.islower() and word not in _STOPWORDS
            if is_content and word not in keywords:
                keywords.append(word)
        self.keywords = tuple(keywords)


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


_TOPICS = tuple(_Topic(*entry) for entry in _TOPIC_TABLE)

# ----------------------------------------------------------------------------------------------------------------------
# Checkers
# ----------------------------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Whitespace-separated tokens that contain at least one letter or digit (so "-" bullets are not words)."""
    return [token for token in text.split() if any(char.isalnum() for char in token)]


def _strip_code_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```[A-Za-z]*\s*\n?(.*?)\n?\s*```\s*", text, flags=re.DOTALL)
    return match.group(1) if match else text


def _check_word_count(text: str, params: dict[str, Any]) -> bool:
    return len(_words(text)) == int(params["n"])


def _check_include_keyword(text: str, params: dict[str, Any]) -> bool:
    return re.search(rf"\b{re.escape(str(params['keyword']))}\b", text, flags=re.IGNORECASE) is not None


def _check_uppercase(text: str, params: dict[str, Any]) -> bool:
    return text.isupper()


def _check_lowercase(text: str, params: dict[str, Any]) -> bool:
    return text.islower()


def _check_bullet_list(text: str, params: dict[str, Any]) -> bool:
    bullets = [line for line in text.splitlines() if re.match(r"\s*- \S", line)]
    return len(bullets) == int(params["n"])


def _check_json_keys(text: str, params: dict[str, Any]) -> bool:
    try:
        obj = json.loads(_strip_code_fence(text).strip())
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and sorted(obj) == sorted(params["keys"])


def _check_end_phrase(text: str, params: dict[str, Any]) -> bool:
    # Case-insensitive and lenient on the final punctuation mark; the phrase must start at a word boundary.
    body = text.strip().strip("\"'").rstrip().rstrip(".!?").lower()
    phrase = str(params["phrase"]).strip().rstrip(".!?").lower()
    if not phrase or not body.endswith(phrase):
        return False
    before = body[: len(body) - len(phrase)]
    return not before or not before[-1].isalnum()


def _check_no_commas(text: str, params: dict[str, Any]) -> bool:
    return bool(text.strip()) and "," not in text


def _check_start_word(text: str, params: dict[str, Any]) -> bool:
    tokens = text.split()
    if not tokens:
        return False
    first = re.sub(r"[^A-Za-z0-9']", "", tokens[0])
    return first.lower() == str(params["word"]).lower()


def _check_one_word(text: str, params: dict[str, Any]) -> bool:
    return len(_words(text)) == 1


INSTRUCTION_CHECKERS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
    "word_count": _check_word_count,
    "include_keyword": _check_include_keyword,
    "uppercase": _check_uppercase,
    "lowercase": _check_lowercase,
    "bullet_list": _check_bullet_list,
    "json_keys": _check_json_keys,
    "end_phrase": _check_end_phrase,
    "no_commas": _check_no_commas,
    "start_word": _check_start_word,
    "one_word": _check_one_word,
}
"""Checker of each kind in [`INSTRUCTION_KINDS`]: `check(text, instruction) -> bool`, where `instruction` is the
parsed dict with the kind's parameters (see [`~tspin_trl.demo.check_instruction`])."""

# ----------------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------------


def _quoted_list(items: Sequence[str]) -> str:
    quoted = [f'"{item}"' for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _make_instruction_example(rng: random.Random, kind: str) -> tuple[str, str, dict[str, Any]]:
    """One (prompt, response, instruction) triple of the given kind; the response always satisfies the instruction."""
    topic = rng.choice(_TOPICS)
    opener = rng.choice(_ONE_WORD_OPENERS if kind == "one_word" else _OPENERS).format(name=topic.name)
    phrase = rng.choice(_INSTRUCTION_PHRASES[kind])
    instruction: dict[str, Any] = {"kind": kind}
    sentence = rng.choice(topic.sentences)  # mid-sentence casing
    if kind == "word_count":
        low, high = _WORD_COUNT_RANGE
        by_length: dict[int, list[str]] = {}
        for candidate in topic.sentences:
            by_length.setdefault(len(_words(candidate)), []).append(candidate)
        n = rng.choice([length for length in range(low, high + 1) if length in by_length])
        instruction["n"] = n
        response = _capitalize(rng.choice(by_length[n]))
    elif kind == "include_keyword":
        keyword = rng.choice(topic.keywords)
        instruction["keyword"] = keyword
        candidates = [s for s in topic.sentences if re.search(rf"\b{re.escape(keyword)}\b", s)]
        response = _capitalize(rng.choice(candidates))
    elif kind == "uppercase":
        response = sentence.upper()
    elif kind == "lowercase":
        response = sentence.lower()
    elif kind == "bullet_list":
        n = rng.randint(*_BULLET_RANGE)
        instruction["n"] = n
        facts = rng.sample(topic.facts, n)
        lines = [f"- {_capitalize(topic.subject)} {facts[0]}."]
        lines += [f"- {_capitalize(topic.pronoun)} {fact}." for fact in facts[1:]]
        response = "\n".join(lines)
    elif kind == "json_keys":
        keys = rng.sample(_JSON_KEYS, rng.randint(2, 3))
        instruction["keys"] = keys
        values = {
            "topic": topic.noun,
            "category": topic.category,
            "trait": rng.choice(topic.adjectives),
            "fact": f"{_capitalize(topic.subject)} {rng.choice(topic.facts)}.",
        }
        response = json.dumps({key: values[key] for key in keys})
    elif kind == "end_phrase":
        end = rng.choice(_END_PHRASES)
        instruction["phrase"] = end
        response = f"{_capitalize(sentence)} {end}"
    elif kind == "no_commas":
        response = _capitalize(sentence)
    elif kind == "start_word":
        word = rng.choice(_START_WORDS)
        instruction["word"] = word
        response = f"{word}, {sentence}"
    elif kind == "one_word":
        response = _capitalize(rng.choice(topic.adjectives)) + "."
    else:
        raise ValueError(f"Unknown instruction kind {kind!r}; expected one of {list(INSTRUCTION_KINDS)}.")
    fields = {key: value for key, value in instruction.items() if key != "keys"}
    if "keys" in instruction:
        fields["keys"] = _quoted_list(instruction["keys"])
    prompt = f"{opener} {phrase.format(**fields)}"
    if not INSTRUCTION_CHECKERS[kind](response, instruction):
        raise AssertionError(f"Generated response {response!r} does not follow {instruction!r}.")
    return prompt, response, instruction


def make_instruction_dataset(
    num_train: int = 200,
    num_eval: int = 50,
    seed: int = 0,
    conversational: bool = True,
    prompt_template: str = PAPER_PROMPT_TEMPLATE,
) -> DatasetDict:
    """
    Build the synthetic verifiable instruction-following dataset.

    Each prompt is one short sentence about a simple topic (animals, fruits, colors, cities, weather, ...) followed by
    one verifiable instruction of a kind in [`INSTRUCTION_KINDS`]. The annotated response is generated from a small
    per-topic vocabulary and always satisfies the instruction. Prompts are under 40 words and responses at most about
    30 words. Kinds are balanced: row `i` of a split has kind `INSTRUCTION_KINDS[i % 10]` before the split is shuffled.

    Args:
        num_train (`int`, *optional*, defaults to `200`):
            Number of rows of the `"train"` split.
        num_eval (`int`, *optional*, defaults to `50`):
            Number of rows of the `"test"` split. No prompt of the test split appears in the train split.
        seed (`int`, *optional*, defaults to `0`):
            Random seed. The same seed always gives the same dataset.
        conversational (`bool`, *optional*, defaults to `True`):
            If `True`, `prompt` is `[{"role": "user", "content": ...}]` and `completion` is
            `[{"role": "assistant", "content": ...}]`. If `False`, both are plain strings and the prompt is formatted
            with `prompt_template`.
        prompt_template (`str`, *optional*, defaults to `PAPER_PROMPT_TEMPLATE`):
            Template with a `{prompt}` field for the plain-text prompts. The default is the T-SPIN paper's
            `"### Instruction: {prompt}\\n\\n### Response: "`. Ignored when `conversational=True`.

    Returns:
        [`~datasets.DatasetDict`]: Splits `"train"` and `"test"` with columns `prompt`, `completion` and
        `instruction` (a JSON string with the `kind` and its parameters, see [`~tspin_trl.demo.check_instruction`]).

    Example:

    ```python
    >>> from tspin_trl.demo import check_instruction, make_instruction_dataset

    >>> dataset = make_instruction_dataset(num_train=20, num_eval=10, seed=0)
    >>> row = dataset["train"][0]
    >>> check_instruction(row["completion"][0]["content"], row["instruction"])
    True
    ```
    """

    def make_example(rng: random.Random, index: int) -> tuple[str, str, dict[str, Any]]:
        return _make_instruction_example(rng, INSTRUCTION_KINDS[index % len(INSTRUCTION_KINDS)])

    return build_splits(make_example, num_train, num_eval, seed, conversational, prompt_template)
