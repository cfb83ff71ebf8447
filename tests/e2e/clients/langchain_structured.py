"""LangChain's with_structured_output through the gateway, once per route:
a Pydantic model back, by JSON schema and by JSON mode."""
import json
import sys

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

base, routes = sys.argv[1], sys.argv[2:]


class Weather(BaseModel):
    city: str
    temp_c: float


for route in routes:
    llm = ChatOpenAI(model=route, base_url=base + "/v1", api_key="unused", max_retries=0)
    ask = [HumanMessage("What is the weather in Paris? Answer as JSON with city and temp_c.")]
    w = llm.with_structured_output(Weather, method="json_schema").invoke(ask)
    assert w == Weather(city="Paris", temp_c=21), w
    raw = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke(ask)
    assert raw["parsing_error"] is None, raw
    assert json.loads(raw["raw"].content) == {"city": "Paris", "temp_c": 21}, raw["raw"].content
    w = llm.with_structured_output(Weather, method="json_mode").invoke(ask)
    assert w == Weather(city="Paris", temp_c=21), w
    print(json.dumps({"route": route}))
