"""Drives ccpool with the official openai SDK (its own HTTP client and SSE parser).

Usage: openai_client.py BASE_URL. Prints one JSON object with what the SDK saw."""
import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-openai-sdk-test", max_retries=0)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
out = {}

completion = client.chat.completions.create(
    model="gpt-4o",
    messages=[
        {"role": "system", "content": "SYSTEM-PART-A"},
        {"role": "developer", "content": "DEVELOPER-PART-B"},
        {"role": "user", "content": "openai turn one"},
        {"role": "assistant", "content": "openai answer one"},
        {"role": "user", "content": "openai turn two"},
        {"role": "assistant", "content": "openai answer two"},
        {"role": "user", "content": [
            {"type": "text", "text": "openai turn three"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
        ]},
    ],
    max_completion_tokens=200,
)
out["plain"] = {
    "id": completion.id,
    "model": completion.model,
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "prompt_tokens": completion.usage.prompt_tokens,
    "completion_tokens": completion.usage.completion_tokens,
}

chunks = list(client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "openai streamed reply"}],
    stream=True,
    stream_options={"include_usage": True},
))
out["stream"] = {
    "ids": sorted({c.id for c in chunks}),
    "first_role": chunks[0].choices[0].delta.role,
    "deltas": [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content],
    "finish_reasons": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
    "usage": chunks[-1].usage.completion_tokens if chunks[-1].usage else None,
    "last_choices": len(chunks[-1].choices),
}

structured = client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": 'give json [[json:{"city":"Paris","population":2102650}]]'}],
    response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }}},
)
out["json_schema"] = json.loads(structured.choices[0].message.content)

for name, call in [
    ("n2", lambda: client.chat.completions.create(model="gpt-4o", n=2, messages=[{"role": "user", "content": "x"}])),
    ("rate_limited", lambda: client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[e429]]"}])),
    ("overloaded", lambda: client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[e529]]"}])),
]:
    try:
        call()
        out[name] = None
    except openai.APIStatusError as e:
        out[name] = {"status": e.status_code, "class": type(e).__name__, "param": (e.body or {}).get("param")}

models = client.models.list()
out["models"] = [m.id for m in models.data]
print(json.dumps(out))
