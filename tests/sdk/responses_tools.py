"""Function calling through ccpool's Responses API with the official openai SDK: calls as
`function_call` items (plain and streamed), their outputs sent back with
`previous_response_id` or with the whole input replayed, parallel calls, `parallel_tool_calls`
false, and forced calls (`tool_choice` required or a named function).

Usage: responses_tools.py BASE_URL. Prints one JSON object with what the SDK saw."""
import json
import sys

import anthropic
import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-responses-tools-test", max_retries=0)
weather = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
clock = {
    "type": "function",
    "name": "get_time",
    "description": "The time somewhere",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}},
}
out = {}


def calls_of(response):
    return [
        {"type": o.type, "id": o.id, "call_id": o.call_id, "name": o.name, "arguments": o.arguments, "status": o.status}
        for o in response.output
        if o.type == "function_call"
    ]


def result(call, output):
    return {"type": "function_call_output", "call_id": call.call_id, "output": output}


# (a) Not streamed: a call, then its output with previous_response_id.
ask = '[[call]] weather in Oslo? [[input:{"city":"Oslo"}]]'
first = client.responses.create(model="gpt-4o", input=ask, tools=[weather])
call = next(o for o in first.output if o.type == "function_call")
answer = client.responses.create(
    model="gpt-4o", tools=[weather], previous_response_id=first.id,
    input=[result(call, "snow, -3C")],
)
out["plain"] = {
    "status": first.status,
    "output_types": [o.type for o in first.output],
    "calls": calls_of(first),
    "output_text": first.output_text,
    "answer": answer.output_text,
    "answer_status": answer.status,
    "answer_types": [o.type for o in answer.output],
    "items": [i.type for i in client.responses.input_items.list(answer.id, order="asc").data],
}

# (b) Streamed, store false: the events, then the whole input replayed with the output.
ask_text = "[[textcall]] weather in Bergen? [[input:{\"city\":\"Bergen\"}]]"
events = []
with client.responses.stream(model="gpt-4o", input=ask_text, tools=[weather], store=False) as stream:
    for event in stream:
        e = {"type": event.type, "seq": event.sequence_number}
        if hasattr(event, "output_index"):
            e["output_index"] = event.output_index
        if event.type in ("response.output_item.added", "response.output_item.done"):
            e["item"] = event.item.type
            e["item_id"] = event.item.id
        if event.type == "response.function_call_arguments.delta":
            e["delta"] = event.delta
            e["item_id"] = event.item_id
        if event.type == "response.function_call_arguments.done":
            e["arguments"] = event.arguments
            e["name"] = getattr(event, "name", None)
            e["item_id"] = event.item_id
        events.append(e)
    streamed = stream.get_final_response()
call = next(o for o in streamed.output if o.type == "function_call")
replayed = client.responses.create(
    model="gpt-4o", tools=[weather], store=False,
    input=[{"role": "user", "content": ask_text}]
    + [o.model_dump(exclude_none=True) for o in streamed.output]
    + [result(call, "rain, 8C")],
)
out["stream"] = {
    "events": events,
    "status": streamed.status,
    "output_types": [o.type for o in streamed.output],
    "calls": calls_of(streamed),
    "output_text": streamed.output_text,
    "answer": replayed.output_text,
}

# Parallel calls: two function_call items, both outputs in one request.
both = client.responses.create(model="gpt-4o", input="[[call2]] time and weather", tools=[clock, weather])
pair = [o for o in both.output if o.type == "function_call"]
both_answer = client.responses.create(
    model="gpt-4o", tools=[clock, weather], previous_response_id=both.id,
    input=[result(c, "result %d" % i) for i, c in enumerate(pair)],
)
out["parallel"] = {"calls": calls_of(both), "answer": both_answer.output_text}

# parallel_tool_calls false: one call per turn.
one = client.responses.create(
    model="gpt-4o", input="[[call2]] one at a time", tools=[clock, weather], parallel_tool_calls=False,
)
single = [o for o in one.output if o.type == "function_call"]
one_answer = client.responses.create(
    model="gpt-4o", tools=[clock, weather], previous_response_id=one.id, parallel_tool_calls=False,
    input=[result(c, "only %d" % i) for i, c in enumerate(single)],
)
out["serial"] = {
    "calls": calls_of(one),
    "parallel_tool_calls": one.parallel_tool_calls,
    "answer": one_answer.output_text,
}

# The same limit in the other two dialects: Chat Completions' parallel_tool_calls false and
# Anthropic's disable_parallel_tool_use (streamed: the cut message still ends properly).
chat = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "[[call2]] chat one at a time"}],
    tools=[{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in (clock, weather)],
    parallel_tool_calls=False,
)
claude = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-responses-tools-test", max_retries=0)
with claude.messages.stream(
    model="claude-sonnet-4-5", max_tokens=256,
    messages=[{"role": "user", "content": "[[call2]] anthropic one at a time"}],
    tools=[{"name": t["name"], "input_schema": t["parameters"]} for t in (clock, weather)],
    tool_choice={"type": "auto", "disable_parallel_tool_use": True},
) as anthropic_stream:
    anthropic_events = [e.type for e in anthropic_stream]
    message = anthropic_stream.get_final_message()
out["serial_other_dialects"] = {
    "chat": [c.function.name for c in chat.choices[0].message.tool_calls or []],
    "chat_finish": chat.choices[0].finish_reason,
    "anthropic": [b.name for b in message.content if b.type == "tool_use"],
    "anthropic_stop": message.stop_reason,
    "anthropic_events": anthropic_events,
}

# Forced calls: a named function, and "required" over two tools.
named = client.responses.create(
    model="gpt-4o", input='name it [[json:{"city":"Paris"}]]', tools=[clock, weather],
    tool_choice={"type": "function", "name": "get_weather"},
)
required = client.responses.create(
    model="gpt-4o", input='any of them [[json:{"call":{"name":"get_time","input":{"q":"Lima"}}}]]',
    tools=[clock, weather], tool_choice="required",
)
out["forced"] = {
    "named": calls_of(named),
    "named_types": [o.type for o in named.output],
    "required": calls_of(required),
    "tool_choice": named.tool_choice.model_dump() if hasattr(named.tool_choice, "model_dump") else named.tool_choice,
}

# reasoning.summary and text.verbosity are accepted (and echoed).
echoed = client.responses.create(
    model="gpt-4o", input="accepted fields", reasoning={"effort": "low", "summary": "auto"},
    text={"verbosity": "low"},
)
out["accepted"] = {
    "output_text": echoed.output_text,
    "summary": echoed.reasoning.summary if echoed.reasoning else None,
    "verbosity": echoed.text.verbosity if echoed.text else None,
}
print(json.dumps(out))
