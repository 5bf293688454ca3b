"""Runs agents of the OpenAI Agents SDK against ccpool, with the SDK's default model (the
Responses API) on an `AsyncOpenAI` client pointed at ccpool: plain and streamed turns, and an
agent with a function tool that the SDK runs on the client side (`Runner.run_sync`).

Usage: agents_client.py BASE_URL. Prints one JSON object with what the agents produced."""
import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-agents-sdk-test", max_retries=0)
model = OpenAIResponsesModel(model="gpt-4o", openai_client=client)

ran = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(city)
    return f"tool-result: 12C and sunny in {city}"


def tool_agent():
    # Its own client: run_sync runs an event loop of its own.
    own = AsyncOpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-agents-sdk-test", max_retries=0)
    tool_model = OpenAIResponsesModel(model="gpt-4o", openai_client=own)
    agent = Agent(name="Forecaster", instructions="AGENT-TOOLS", model=tool_model, tools=[get_weather])
    result = Runner.run_sync(agent, '[[call]] weather in Oslo? [[input:{"city":"Oslo"}]]')
    return {
        "final_output": result.final_output,
        "items": [i.type for i in result.new_items],
        "ran": ran,
        "responses": len(result.raw_responses),
    }


async def main(out):
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


out = {"tool": tool_agent()}
asyncio.run(main(out))
