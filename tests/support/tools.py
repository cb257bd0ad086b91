"""Tool-call data: a weather tool, the messages of a conversation that uses it (`user`, `assistant`, `tool_call`,
`tool_result`, `agent_trace`), two preference rows that use them (`TOOL_ROWS`), and two tokenizers that render them:
the character-level tokenizer with `TOOL_TEMPLATE` (tools, assistant `tool_calls`, `tool` messages and a `brief`
keyword argument passed per row through `chat_template_kwargs`; the `tool_tokenizer` fixture of `tests/conftest.py`),
and with Qwen2.5's chat template as TRL ships it (`build_qwen_tokenizer`)."""

from importlib.resources import files

from tspin_trl.demo import build_char_tokenizer


# A chat template for the character-level tokenizer that renders `tools`, assistant `tool_calls`, `tool` messages
# and a `brief` keyword argument (passed per row through `chat_template_kwargs`).
TOOL_TEMPLATE = (
    "{%- if tools -%}<|system|>tools:{% for tool in tools %}{{ tool['function']['name'] }};{% endfor %}<|end|>"
    "{%- endif -%}"
    "{%- if brief -%}<|system|>Be brief.<|end|>{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}"
    "{%- if message.tool_calls -%}{%- for call in message.tool_calls -%}"
    "call {{ call['function']['name'] }}({{ call['function']['arguments'] | tojson }})"
    "{%- endfor -%}{%- else -%}{{ message['content'] }}{%- endif -%}"
    "<|end|>{% endgeneration %}"
    "{%- elif message['role'] == 'tool' -%}<|user|>result: {{ message['content'] }}<|end|>"
    "{%- else -%}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def tool_call(city):
    return {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}],
    }


def tool_result(text):
    return {"role": "tool", "content": text}


def agent_trace(city, weather, answer):
    """A completion as agent traces store it: the tool call, its result, the final answer."""
    return [tool_call(city), tool_result(weather), assistant(answer)]


TOOL_ROWS = [
    {  # the real response is a tool call
        "prompt": [user("Weather in Paris?")],
        "chosen": [tool_call("Paris")],
        "rejected": [assistant("Sunny.")],
        "tools": [WEATHER_TOOL],
        "chat_template_kwargs": {"brief": True},
    },
    {  # the prompt holds a tool call and its result; the real response answers from it
        "prompt": [user("Weather in Rome?"), tool_call("Rome"), {"role": "tool", "content": "rain"}],
        "chosen": [assistant("It rains.")],
        "rejected": [assistant("No idea.")],
        "tools": [WEATHER_TOOL],
        "chat_template_kwargs": {"brief": False},
    },
]


def build_tool_tokenizer():
    """The character-level tokenizer with `TOOL_TEMPLATE` as its chat template."""
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    return tokenizer


def build_qwen_tokenizer():
    """The character-level tokenizer with Qwen2.5's chat template (tools, `tool_calls`, `tool` turns) and its turn
    markers as special tokens, `<|im_end|>` ending a turn as in Qwen."""
    tokenizer = build_char_tokenizer(model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = (files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    return tokenizer
