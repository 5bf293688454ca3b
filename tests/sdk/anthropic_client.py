"""Drives ccpool with the official anthropic SDK (its own HTTP client and SSE parser).

Usage: anthropic_client.py BASE_URL. Prints one JSON object with what the SDK saw."""
import json
import sys

import anthropic
import pydantic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-sdk-test", max_retries=0)
out = {}

message = client.messages.create(
    model="claude-sonnet-4-5",
    max_tokens=256,
    system="You are terse.",
    messages=[{"role": "user", "content": "sdk plain"}],
)
out["plain"] = {
    "text": "".join(b.text for b in message.content if b.type == "text"),
    "stop_reason": message.stop_reason,
    "model": message.model,
    "input_tokens": message.usage.input_tokens,
    "output_tokens": message.usage.output_tokens,
}

deltas = []
with client.messages.stream(
    model="claude-sonnet-4-5",
    max_tokens=256,
    messages=[
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "sdk streamed"},
    ],
) as stream:
    for text in stream.text_stream:
        deltas.append(text)
    final = stream.get_final_message()
out["stream"] = {"deltas": deltas, "final_text": final.content[0].text, "stop_reason": final.stop_reason}

try:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "[[e429]]"}])
    out["rate_limited"] = None
except anthropic.RateLimitError as e:
    out["rate_limited"] = {"status": e.status_code, "type": e.body["error"]["type"]}

try:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=[])
    out["bad_request"] = None
except anthropic.BadRequestError as e:
    out["bad_request"] = {"status": e.status_code, "type": e.body["error"]["type"]}

class Place(pydantic.BaseModel):
    city: str


# Structured output: the SDK sends output_config.format and parses the text as the model.
parsed = client.messages.parse(
    model="claude-sonnet-4-5",
    max_tokens=256,
    messages=[{"role": "user", "content": '[[json:{"city":"Paris"}]] where is it?'}],
    output_format=Place,
)
out["parsed"] = {"city": parsed.parsed_output.city if parsed.parsed_output else None}

print(json.dumps(out))
