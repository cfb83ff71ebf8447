"""LangChain's ChatOpenAI against the gateway, once per route: invoke,
stream, bound tools (streamed and not), structured output through a JSON
schema."""
import json
import sys

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

base, routes = sys.argv[1], sys.argv[2:]


class Weather(BaseModel):
    city: str
    temp_c: float


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "21C"


for route in routes:
    llm = ChatOpenAI(model=route, base_url=base + "/v1", api_key="unused", max_retries=0)
    ask = [SystemMessage("Be brief."), HumanMessage("What is the weather in Paris?")]
    text = llm.invoke(ask).content
    assert text.startswith("answer from"), text
    streamed = "".join(c.content for c in llm.stream(ask))
    assert streamed == text, (streamed, text)
    calls = llm.bind_tools([get_weather]).invoke(ask).tool_calls
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["args"] == {"city": "Paris"}, calls
    # Streamed, the chunks add up to the same call (LangChain merges them by index).
    merged = None
    for c in llm.bind_tools([get_weather]).stream(ask):
        merged = c if merged is None else merged + c
    calls = merged.tool_calls
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["args"] == {"city": "Paris"}, calls
    w = llm.with_structured_output(Weather, method="json_schema").invoke(ask)
    assert w == Weather(city="Paris", temp_c=21), w
    print(json.dumps({"route": route, "text": text}))
