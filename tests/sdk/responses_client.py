"""Drives ccpool's Responses API with the official openai SDK (its own HTTP client, SSE parser,
stream accumulator and structured-output parsing).

Usage: responses_client.py BASE_URL. Prints one JSON object with what the SDK saw."""
import json
import sys

import openai
from pydantic import BaseModel

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-responses-sdk-test", max_retries=0)
stranger = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-someone-else", max_retries=0)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
out = {}


def status_of(call):
    try:
        call()
        return None
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {"status": e.status_code, "class": type(e).__name__, "param": body.get("param"), "code": body.get("code")}


plain = client.responses.create(model="gpt-4o", instructions="RESP-INSTRUCTIONS", input="responses turn one")
out["plain"] = {
    "id": plain.id,
    "object": plain.object,
    "status": plain.status,
    "model": plain.model,
    "output_text": plain.output_text,
    "output_types": [o.type for o in plain.output],
    "input_tokens": plain.usage.input_tokens,
    "output_tokens": plain.usage.output_tokens,
    "total_tokens": plain.usage.total_tokens,
}

items = client.responses.create(
    model="gpt-4o",
    input=[
        {"role": "developer", "content": "RESP-DEVELOPER"},
        {"role": "user", "content": [
            {"type": "input_text", "text": "responses image turn"},
            {"type": "input_image", "image_url": "data:image/png;base64," + PNG, "detail": "auto"},
        ]},
    ],
)
out["items"] = {"output_text": items.output_text, "status": items.status}

deltas, types, sequence = [], [], []
with client.responses.stream(model="gpt-4o", input="responses streamed reply") as stream:
    for event in stream:
        types.append(event.type)
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
out["stream"] = {
    "deltas": deltas,
    "types": types,
    "sequence": sequence,
    "output_text": final.output_text,
    "status": final.status,
    "id": final.id,
}

first = client.responses.create(model="gpt-4o", input="chain turn one")
second = client.responses.create(model="gpt-4o", input="chain turn two", previous_response_id=first.id)
out["chain"] = {"first": first.output_text, "second": second.output_text, "previous": second.previous_response_id}

schema = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
structured = client.responses.create(
    model="gpt-4o",
    input='give json [[json:{"city":"Paris","population":2102650}]]',
    text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
)
out["json_schema"] = json.loads(structured.output_text)


class City(BaseModel):
    city: str
    population: int


parsed = client.responses.parse(
    model="gpt-4o",
    input='parse json [[json:{"city":"Lyon","population":522250}]]',
    text_format=City,
)
out["parsed"] = parsed.output_parsed.model_dump()

truncated = client.responses.create(model="gpt-4o", input="[[max]] a long story", max_output_tokens=50)
out["max_output_tokens"] = {
    "status": truncated.status,
    "reason": truncated.incomplete_details.reason if truncated.incomplete_details else None,
    "output_text": truncated.output_text,
}

kept = client.responses.retrieve(second.id)
listed = client.responses.input_items.list(second.id, order="asc")
out["retrieve"] = {
    "id": kept.id,
    "output_text": kept.output_text,
    "items": [[i.type, getattr(i, "role", None)] for i in listed.data],
}
out["foreign"] = status_of(lambda: stranger.responses.retrieve(second.id))
out["foreign_continue"] = status_of(
    lambda: stranger.responses.create(model="gpt-4o", input="x", previous_response_id=second.id)
)
client.responses.delete(first.id)
out["deleted"] = status_of(lambda: client.responses.retrieve(first.id))

for name, call in [
    ("rate_limited", lambda: client.responses.create(model="gpt-4o", input="[[e429]]")),
    ("overloaded", lambda: client.responses.create(model="gpt-4o", input="[[e529]]")),
    ("web_search", lambda: client.responses.create(model="gpt-4o", input="x", tools=[{"type": "web_search"}])),
    ("background", lambda: client.responses.create(model="gpt-4o", input="x", background=True)),
]:
    out[name] = status_of(call)

print(json.dumps(out))
