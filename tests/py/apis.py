"""Drives Beacon's other APIs with the official SDKs for the end-to-end tests: the `openai`
SDK for Responses, embeddings, legacy completions and model retrieval; the `anthropic` SDK
for Messages (create and stream, with a tool use round trip).

Usage: apis.py '<json args>' (or "-" and the JSON on stdin); prints one JSON object.

args: base_url (Beacon's /v1 URL), api_key, mode, request (kwargs), optional: close_after
(close a stream after this many events), headers (extra headers), auth ("x-api-key" to
authenticate the OpenAI SDK with that header instead of a bearer token).
"""

import json
import sys

import anthropic
import openai


def openai_client(args):
    headers = dict(args.get("headers") or {})
    return openai.OpenAI(
        base_url=args["base_url"],
        api_key=args["api_key"],
        max_retries=0,
        timeout=args.get("timeout", 30),
        default_headers=headers or None,
    )


def anthropic_client(args):
    # The Anthropic SDK appends /v1/messages to its base URL: Beacon's root.
    base = args["base_url"].removesuffix("/v1")
    return anthropic.Anthropic(
        base_url=base,
        api_key=args["api_key"],
        max_retries=0,
        timeout=args.get("timeout", 30),
        default_headers=args.get("headers") or None,
    )


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def run(args, out):
    mode = args["mode"]
    req = dict(args.get("request", {}))
    # Beacon's extensions are not SDK parameters: they go in the body through extra_body
    # (as with `user` on Messages, which Anthropic's API does not define).
    extensions = ["session_id", "trace"] + (["user"] if mode.startswith("messages") else [])
    extra = {k: req.pop(k) for k in extensions if k in req}
    if extra:
        req["extra_body"] = extra
    if mode == "responses":
        raw = openai_client(args).responses.with_raw_response.create(**req)
        resp = raw.parse()
        out["response"] = resp.model_dump()
        out["output_text"] = resp.output_text
        out["headers"] = dict(raw.headers)
    elif mode == "responses_stream":
        events = []
        with openai_client(args).responses.create(stream=True, **req) as stream:
            for ev in stream:
                events.append(ev.model_dump())
                if args.get("close_after") and len(events) >= args["close_after"]:
                    out["closed"] = True
                    break
        out["events"] = events
        out["types"] = [e["type"] for e in events]
        out["text"] = "".join(e.get("delta", "") for e in events if e["type"] == "response.output_text.delta")
    elif mode == "responses_tool_round_trip":
        client = openai_client(args)
        tools = [{"type": "function", "name": "get_weather", "description": "Current weather",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
        first = client.responses.create(tools=tools, **req)
        call = next(i for i in first.output if i.type == "function_call")
        follow = req["input"] + [call.model_dump(exclude_none=True),
                                 {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}]
        second = client.responses.create(model=req["model"], tools=tools, input=follow)
        out["call"] = call.model_dump()
        out["answer"] = second.output_text
    elif mode == "embeddings":
        raw = openai_client(args).embeddings.with_raw_response.create(**req)
        out["embeddings"] = raw.parse().model_dump()
        out["raw"] = json.loads(raw.http_response.text)
        out["headers"] = dict(raw.headers)
    elif mode == "completions":
        out["completion"] = openai_client(args).completions.create(**req).model_dump()
    elif mode == "completions_stream":
        chunks = [c.model_dump() for c in openai_client(args).completions.create(stream=True, **req)]
        out["chunks"] = chunks
        out["text"] = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
    elif mode == "model":
        out["model"] = openai_client(args).models.retrieve(args["model"]).model_dump()
    elif mode == "retrieve":
        client = openai_client(args)
        rid = args["id"]
        out["retrieved"] = client.responses.retrieve(rid).model_dump()
        out["items"] = client.responses.input_items.list(rid).model_dump()
        out["cancelled"] = client.responses.cancel(rid).model_dump()
        client.responses.delete(rid)
        out["deleted"] = True
    elif mode == "messages":
        raw = anthropic_client(args).messages.with_raw_response.create(**req)
        out["message"] = raw.parse().model_dump()
        out["headers"] = dict(raw.headers)
    elif mode == "messages_stream":
        events = []
        with anthropic_client(args).messages.stream(**req) as stream:
            for ev in stream:
                events.append(ev.model_dump())
                if args.get("close_after") and len(events) >= args["close_after"]:
                    out["closed"] = True
                    break
            if not out.get("closed"):
                out["final"] = stream.get_final_message().model_dump()
        out["types"] = [e["type"] for e in events]
    elif mode == "messages_tool_round_trip":
        client = anthropic_client(args)
        messages = list(req["messages"])
        first = client.messages.create(tools=[WEATHER_TOOL], **req)
        use = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]},
        ]
        with client.messages.stream(model=req["model"], max_tokens=req["max_tokens"],
                                    tools=[WEATHER_TOOL], messages=messages) as stream:
            final = stream.get_final_message()
        out["tool_use"] = use.model_dump()
        out["stop_reason"] = first.stop_reason
        out["answer"] = "".join(b.text for b in final.content if b.type == "text")
    else:
        raise SystemExit(f"unknown mode {mode}")


def main() -> None:
    args = json.loads(sys.stdin.read() if sys.argv[1] == "-" else sys.argv[1])
    out: dict = {}
    try:
        run(args, out)
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        out["error"] = {"class": type(e).__name__, "status": e.status_code, "body": e.body,
                        "headers": dict(e.response.headers)}
    except (openai.APIError, anthropic.APIError) as e:
        out["error"] = {"class": type(e).__name__, "message": e.message, "body": e.body}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
