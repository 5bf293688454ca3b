"""Drives a client-tool round trip through ccpool with the official anthropic and openai SDKs.

Usage: tools_client.py BASE_URL. Prints one JSON object with what the SDKs saw."""
import json
import sys

import anthropic
import openai

base = sys.argv[1]
out = {}

# Anthropic: a streamed call, then the result.
claude = anthropic.Anthropic(base_url=base, api_key="sk-sdk-test", max_retries=0)
tools = [{
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
question = {"role": "user", "content": '[[call]] weather in Oslo? [[input:{"city":"Oslo"}]]'}
with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=256, tools=tools, messages=[question]) as stream:
    partial = [e.partial_json for e in stream if e.type == "input_json"]
    first = stream.get_final_message()
call = next(b for b in first.content if b.type == "tool_use")
out["anthropic_call"] = {
    "name": call.name, "id": call.id, "input": call.input,
    "stop_reason": first.stop_reason, "partial": partial,
}
second = claude.messages.create(
    model="claude-sonnet-4-5", max_tokens=256, tools=tools,
    messages=[
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "snow, -3C"}]},
    ],
)
out["anthropic_answer"] = {
    "stop_reason": second.stop_reason,
    "text": "".join(b.text for b in second.content if b.type == "text"),
}
try:
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=16,
                           tools=[{"type": "web_search_20250305", "name": "web_search"}],
                           messages=[{"role": "user", "content": "x"}])
    out["server_tool"] = None
except anthropic.BadRequestError as e:
    out["server_tool"] = {"status": e.status_code, "message": e.body["error"]["message"]}

# OpenAI: two parallel calls, streamed, then the tool messages.
gpt = openai.OpenAI(base_url=base + "/v1", api_key="sk-sdk-test", max_retries=0)
functions = [
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_weather", "strict": True, "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}},
]
ask = {"role": "user", "content": "[[call2]] both please"}
calls = {}
finish = None
for chunk in gpt.chat.completions.create(model="claude-sonnet-4-5", messages=[ask], tools=functions, stream=True):
    if not chunk.choices:
        continue
    choice = chunk.choices[0]
    for d in choice.delta.tool_calls or []:
        c = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
        if d.id:
            c["id"] = d.id
        if d.function and d.function.name:
            c["name"] = d.function.name
        if d.function and d.function.arguments:
            c["arguments"] += d.function.arguments
    finish = choice.finish_reason or finish
ordered = [calls[i] for i in sorted(calls)]
out["openai_calls"] = {"calls": ordered, "finish_reason": finish}
answer = gpt.chat.completions.create(
    model="claude-sonnet-4-5", tools=functions,
    messages=[
        ask,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in ordered
        ]},
    ] + [{"role": "tool", "tool_call_id": c["id"], "content": "result %d" % i} for i, c in enumerate(ordered)],
)
out["openai_answer"] = {"finish_reason": answer.choices[0].finish_reason, "content": answer.choices[0].message.content}
print(json.dumps(out))
