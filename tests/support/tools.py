"""Tool-call data for the character-level tokenizer: a chat template that renders `tools`, assistant `tool_calls`,
`tool` messages and a `brief` keyword argument (passed per row through `chat_template_kwargs`), a weather tool, and two
rows that use them (the `tool_tokenizer` fixture of `tests/conftest.py` is the tokenizer with this template)."""

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
