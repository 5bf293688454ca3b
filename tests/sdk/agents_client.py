"""Runs agents of the OpenAI Agents SDK against ccpool, with the SDK's default model (the
Responses API) on an `AsyncOpenAI` client pointed at ccpool.

Usage: agents_client.py BASE_URL. Prints one JSON object with what the agents produced."""
import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-agents-sdk-test", max_retries=0)
model = OpenAIResponsesModel(model="gpt-4o", openai_client=client)


async def main():
    out = {}
    agent = Agent(name="Greeter", instructions="AGENT-INSTRUCTIONS", model=model)
    result = await Runner.run(agent, "agents plain turn")
    out["plain"] = {"final_output": result.final_output, "items": [i.type for i in result.new_items]}

    streamed = Runner.run_streamed(agent, "agents streamed turn")
    deltas = []
    async for event in streamed.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    out["streamed"] = {"final_output": streamed.final_output, "deltas": deltas}
    print(json.dumps(out))


asyncio.run(main())
