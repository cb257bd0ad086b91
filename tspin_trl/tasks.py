"""
Deterministic, seeded synthetic tasks with programmatic checkers.

Two tasks are provided:

- **Verifiable instruction following** ([`make_instruction_dataset`]), in the spirit of IFEval but sized for a
  135M-parameter instruct model: short prompts (one sentence about a simple topic plus one verifiable instruction) and
  short annotated responses that are generated programmatically and always satisfy their instruction.
- **Digit sorting** ([`make_sorting_dataset`]), a tiny task with a clear data-scaling gap for a ~1M-parameter
  character-level model.

Every row has a `prompt`, a `completion` and an `instruction` column. The `instruction` column is a JSON string with a
`kind` and its parameters, so that [`check_instruction`] can score any row of either task, and [`task_scorer`] returns
a `score(responses, rows) -> float` function for each task. All text is printable ASCII.
"""

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value


__all__ = [
    "INSTRUCTION_KINDS",
    "PAPER_PROMPT_TEMPLATE",
    "SORTING_PROMPT_TEMPLATE",
    "TASK_NAMES",
    "check_instruction",
    "check_sorting",
    "instruction_pass_rate",
    "make_instruction_dataset",
    "make_sorting_dataset",
    "task_scorer",
]

PAPER_PROMPT_TEMPLATE = "### Instruction: {prompt}\n\n### Response: "
"""Plain-text prompt template of the T-SPIN paper, used by the non-conversational instruction dataset."""

SORTING_PROMPT_TEMPLATE = "{prompt}\n"
"""Plain-text prompt template of the non-conversational sorting dataset (the answer follows the newline)."""

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

TASK_NAMES = ("instructions", "sorting")
"""Names accepted by [`task_scorer`]."""

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
_MAX_ATTEMPTS_PER_ROW = 200


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


def _as_text(response: Any) -> str:
    """Return the text of a response given as a string, a message dict or a list of messages (last one is used)."""
    if response is None:
        return ""
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        return str(response.get("content", ""))
    if isinstance(response, Sequence):
        return _as_text(response[-1]) if len(response) > 0 else ""
    return str(response)


def _words(text: str) -> list[str]:
    """Whitespace-separated tokens that contain at least one letter or digit (so "-" bullets are not words)."""
    return [token for token in text.split() if any(char.isalnum() for char in token)]


def _parse_instruction(instruction: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(instruction, str):
        try:
            instruction = json.loads(instruction)
        except json.JSONDecodeError as error:
            raise ValueError(f"The instruction is not valid JSON: {instruction!r}") from error
    if not isinstance(instruction, dict) or "kind" not in instruction:
        raise ValueError(f"An instruction must be a dict (or JSON object) with a 'kind' key, got {instruction!r}.")
    return instruction


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


def _check_sorting_instruction(text: str, params: dict[str, Any]) -> bool:
    return check_sorting(params["digits"], text)


_CHECKERS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
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
    "sorting": _check_sorting_instruction,
}


def check_instruction(response: str | list[dict[str, str]], instruction: str | dict[str, Any]) -> bool:
    """
    Check whether a response follows a verifiable instruction.

    Args:
        response (`str` or `list[dict[str, str]]`):
            The response text, or a conversational completion (list of messages; the content of the last one is
            checked).
        instruction (`str` or `dict[str, Any]`):
            The instruction, as stored in the `instruction` column of the datasets of this module: a dict (or its JSON
            string) with a `kind` key and the parameters of that kind. Supported kinds and parameters:

            - `"word_count"` (`n`): exactly `n` words (whitespace-separated tokens that contain a letter or digit).
            - `"include_keyword"` (`keyword`): contains `keyword` as a whole word (case-insensitive).
            - `"uppercase"` / `"lowercase"`: every cased character is upper / lower case (and there is at least one).
            - `"bullet_list"` (`n`): exactly `n` lines that start with `"- "`.
            - `"json_keys"` (`keys`): the response (optionally inside a code fence) is a JSON object with exactly
              `keys`.
            - `"end_phrase"` (`phrase`): ends with `phrase` (case-insensitive, lenient on the final punctuation mark).
            - `"no_commas"`: non-empty and contains no comma.
            - `"start_word"` (`word`): the first word, stripped of punctuation, is `word` (case-insensitive).
            - `"one_word"`: exactly one word.
            - `"sorting"` (`digits`): the response is the sorted digits, see [`check_sorting`].

    Returns:
        `bool`: Whether the response satisfies the instruction.

    Example:

    ```python
    >>> from tspin_trl.tasks import check_instruction

    >>> check_instruction("Vast blue water full life.", {"kind": "word_count", "n": 5})
    True
    >>> check_instruction("Vast blue water.", '{"kind": "word_count", "n": 5}')
    False
    ```
    """
    parsed = _parse_instruction(instruction)
    kind = parsed["kind"]
    if kind not in _CHECKERS:
        raise ValueError(f"Unknown instruction kind {kind!r}; expected one of {sorted(_CHECKERS)}.")
    try:
        return bool(_CHECKERS[kind](_as_text(response), parsed))
    except KeyError as error:
        raise ValueError(f"Instruction {parsed!r} is missing the parameter {error.args[0]!r}.") from error


def instruction_pass_rate(responses: Sequence[Any], instructions: Sequence[str | dict[str, Any]]) -> float:
    """
    Fraction of responses that follow their instruction.

    Args:
        responses (`Sequence[str]` or `Sequence[list[dict[str, str]]]`):
            Responses, as texts or conversational completions.
        instructions (`Sequence[str]` or `Sequence[dict[str, Any]]`):
            One instruction per response, in the format accepted by [`check_instruction`].

    Returns:
        `float`: The pass rate in `[0, 1]` (`0.0` when there are no responses).

    Example:

    ```python
    >>> from tspin_trl.tasks import instruction_pass_rate

    >>> instruction_pass_rate(["HELLO THERE", "Hello"], [{"kind": "uppercase"}, {"kind": "uppercase"}])
    0.5
    ```
    """
    if len(responses) != len(instructions):
        raise ValueError(f"Got {len(responses)} responses but {len(instructions)} instructions.")
    if len(responses) == 0:
        return 0.0
    passed = sum(check_instruction(response, instruction) for response, instruction in zip(responses, instructions))
    return passed / len(responses)


def _sorting_digits(source: Any) -> list[int]:
    """Digits to sort, from a list of ints, an instruction (dict or JSON), a prompt string or a list of messages."""
    if isinstance(source, dict):
        if "digits" in source:
            return [int(digit) for digit in source["digits"]]
        return _sorting_digits(source.get("content", ""))
    if isinstance(source, str):
        stripped = source.strip()
        if stripped.startswith("{"):
            return _sorting_digits(_parse_instruction(stripped))
        match = re.search(r"sort:([^\n]*)", source)
        return [int(char) for char in re.findall(r"\d", match.group(1) if match else source)]
    if isinstance(source, Iterable):
        items = list(source)
        if items and all(isinstance(item, dict) for item in items):
            return _sorting_digits(" ".join(str(m.get("content", "")) for m in items if m.get("role") == "user"))
        return [int(item) for item in items]
    raise TypeError(f"Cannot read digits to sort from {source!r}.")


def check_sorting(
    prompt_or_digits: str | Sequence[int] | list[dict[str, str]] | dict[str, Any], response: Any
) -> bool:
    """
    Check a response of the digit-sorting task.

    Args:
        prompt_or_digits (`str`, `Sequence[int]`, `list[dict[str, str]]` or `dict[str, Any]`):
            What to sort: a prompt (`"sort: 8 3 1 9"`, also inside a plain-text template), a conversational prompt
            (list of messages; the user messages are read), a sequence of digits, or a sorting instruction (dict or
            JSON string with a `digits` key).
        response (`str` or `list[dict[str, str]]`):
            The response text, or a conversational completion.

    Returns:
        `bool`: Whether the response, stripped of surrounding whitespace, is exactly the sorted digits separated by
        single spaces.

    Example:

    ```python
    >>> from tspin_trl.tasks import check_sorting

    >>> check_sorting("sort: 8 3 1 9", "1 3 8 9")
    True
    >>> check_sorting([8, 3, 1, 9], "1 3 9 8")
    False
    ```
    """
    digits = _sorting_digits(prompt_or_digits)
    if not digits:
        raise ValueError(f"No digits to sort found in {prompt_or_digits!r}.")
    return _as_text(response).strip() == " ".join(str(digit) for digit in sorted(digits))


def task_scorer(name: str) -> Callable[[Sequence[Any], Sequence[dict[str, Any]]], float]:
    """
    Scoring function of a task.

    Args:
        name (`str`):
            `"instructions"` (verifiable instruction following) or `"sorting"` (digit sorting).

    Returns:
        `Callable[[Sequence[str], Sequence[dict]], float]`: A function `score(responses, rows)` that returns the
        fraction of correct responses, where `rows` are dataset rows (dicts with an `instruction` column, or for
        sorting at least a `prompt`), one per response. An empty batch scores `0.0`.

    Example:

    ```python
    >>> from tspin_trl.tasks import make_sorting_dataset, task_scorer

    >>> test = make_sorting_dataset(num_train=10, num_eval=4)["test"]
    >>> score = task_scorer("sorting")
    >>> score([row["completion"][0]["content"] for row in test], list(test))
    1.0
    ```
    """
    if name == "instructions":

        def score_instructions(responses: Sequence[Any], rows: Sequence[dict[str, Any]]) -> float:
            rows = list(rows)
            return instruction_pass_rate(responses, [row["instruction"] for row in rows])

        return score_instructions
    if name == "sorting":

        def score_sorting(responses: Sequence[Any], rows: Sequence[dict[str, Any]]) -> float:
            rows = list(rows)
            if len(responses) != len(rows):
                raise ValueError(f"Got {len(responses)} responses but {len(rows)} rows.")
            if not rows:
                return 0.0
            passed = sum(
                check_sorting(row["instruction"] if row.get("instruction") else row["prompt"], response)
                for response, row in zip(responses, rows)
            )
            return passed / len(rows)

        return score_sorting
    raise ValueError(f"Unknown task {name!r}; expected one of {list(TASK_NAMES)}.")


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
    if not check_instruction(response, instruction):
        raise AssertionError(f"Generated response {response!r} does not follow {instruction!r}.")
    return prompt, response, instruction


def _conversational_features() -> Features:
    message = {"role": Value("string"), "content": Value("string")}
    return Features({"prompt": List(message), "completion": List(message), "instruction": Value("string")})


def _plain_features() -> Features:
    return Features({"prompt": Value("string"), "completion": Value("string"), "instruction": Value("string")})


def _to_row(prompt: str, response: str, instruction: dict[str, Any], conversational: bool, template: str) -> dict:
    if conversational:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": response}],
            "instruction": json.dumps(instruction, sort_keys=True),
        }
    return {
        "prompt": template.format(prompt=prompt),
        "completion": response,
        "instruction": json.dumps(instruction, sort_keys=True),
    }


def _build_splits(
    make_example: Callable[[random.Random, int], tuple[str, str, dict[str, Any]]],
    num_train: int,
    num_eval: int,
    seed: int,
    conversational: bool,
    template: str,
) -> DatasetDict:
    """Draw unique prompts for both splits (train first), so no prompt appears in both splits."""
    if num_train < 0 or num_eval < 0:
        raise ValueError(f"num_train and num_eval must be non-negative, got {num_train} and {num_eval}.")
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, size in (("train", num_train), ("test", num_eval)):
        rows = []
        for index in range(size):
            for _ in range(_MAX_ATTEMPTS_PER_ROW):
                prompt, response, instruction = make_example(rng, index)
                if prompt not in seen:
                    break
            else:
                raise ValueError(
                    f"Could not draw {num_train + num_eval} distinct prompts; ask for fewer examples (seen {len(seen)})."
                )
            seen.add(prompt)
            rows.append(_to_row(prompt, response, instruction, conversational, template))
        rng.shuffle(rows)
        splits[split] = rows
    features = _conversational_features() if conversational else _plain_features()
    return DatasetDict(
        {
            split: Dataset.from_dict({column: [row[column] for row in rows] for column in features}, features=features)
            for split, rows in splits.items()
        }
    )


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
        `instruction` (a JSON string with the `kind` and its parameters, see [`check_instruction`]).

    Example:

    ```python
    >>> from tspin_trl.tasks import check_instruction, make_instruction_dataset

    >>> dataset = make_instruction_dataset(num_train=20, num_eval=10, seed=0)
    >>> row = dataset["train"][0]
    >>> check_instruction(row["completion"][0]["content"], row["instruction"])
    True
    ```
    """

    def make_example(rng: random.Random, index: int) -> tuple[str, str, dict[str, Any]]:
        return _make_instruction_example(rng, INSTRUCTION_KINDS[index % len(INSTRUCTION_KINDS)])

    return _build_splits(make_example, num_train, num_eval, seed, conversational, prompt_template)


def make_sorting_dataset(
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 12,
    conversational: bool = True,
    prompt_template: str = SORTING_PROMPT_TEMPLATE,
) -> DatasetDict:
    """
    Build the synthetic digit-sorting dataset.

    The prompt is `"sort: "` followed by `min_len` to `max_len` random digits (0-9, with repetition) separated by
    spaces, e.g. `"sort: 8 3 1 9 3 0 7 2"`; the completion is the same digits sorted in ascending order, e.g.
    `"0 1 2 3 3 7 8 9"`.

    Args:
        num_train (`int`, *optional*, defaults to `2000`):
            Number of rows of the `"train"` split.
        num_eval (`int`, *optional*, defaults to `200`):
            Number of rows of the `"test"` split. No prompt of the test split appears in the train split.
        seed (`int`, *optional*, defaults to `0`):
            Random seed. The same seed always gives the same dataset.
        min_len (`int`, *optional*, defaults to `8`):
            Minimum number of digits.
        max_len (`int`, *optional*, defaults to `12`):
            Maximum number of digits.
        conversational (`bool`, *optional*, defaults to `True`):
            If `True`, `prompt` is `[{"role": "user", "content": ...}]` and `completion` is
            `[{"role": "assistant", "content": ...}]`. If `False`, both are plain strings and the prompt is formatted
            with `prompt_template`.
        prompt_template (`str`, *optional*, defaults to `SORTING_PROMPT_TEMPLATE`):
            Template with a `{prompt}` field for the plain-text prompts; the default `"{prompt}\\n"` ends the prompt
            with a newline. Ignored when `conversational=True`.

    Returns:
        [`~datasets.DatasetDict`]: Splits `"train"` and `"test"` with columns `prompt`, `completion` and
        `instruction` (a JSON string `{"answer": ..., "digits": [...], "kind": "sorting"}`).

    Example:

    ```python
    >>> from tspin_trl.tasks import check_sorting, make_sorting_dataset

    >>> dataset = make_sorting_dataset(num_train=100, num_eval=20, seed=0)
    >>> row = dataset["test"][0]
    >>> check_sorting(row["prompt"], row["completion"])
    True
    ```
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"Expected 1 <= min_len <= max_len, got min_len={min_len} and max_len={max_len}.")

    def make_example(rng: random.Random, index: int) -> tuple[str, str, dict[str, Any]]:
        digits = [rng.randrange(10) for _ in range(rng.randint(min_len, max_len))]
        answer = " ".join(str(digit) for digit in sorted(digits))
        prompt = "sort: " + " ".join(str(digit) for digit in digits)
        instruction = {"kind": "sorting", "digits": digits, "answer": answer}
        if not check_sorting(digits, answer):
            raise AssertionError(f"Generated answer {answer!r} does not sort {digits!r}.")
        return prompt, answer, instruction

    return _build_splits(make_example, num_train, num_eval, seed, conversational, prompt_template)
