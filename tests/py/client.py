"""Drives Beacon with the official OpenAI Python SDK for the end-to-end tests.

Usage: client.py '<json args>'; prints one JSON object on stdout.

args: base_url, api_key, mode ("chat" | "stream" | "models"), request (kwargs for
chat.completions.create), optional: release_url (POSTed once the first content chunk has
arrived), close_after (close the stream after this many chunks), headers (extra headers).
"""

import json
import sys
import time
import urllib.request

import openai


def main() -> None:
    # "-": the arguments come on stdin (a large prompt exceeds the kernel's argument limit).
    args = json.loads(sys.stdin.read() if sys.argv[1] == "-" else sys.argv[1])
    client = openai.OpenAI(
        base_url=args["base_url"],
        api_key=args["api_key"],
        max_retries=0,
        timeout=args.get("timeout", 30),
        default_headers=args.get("headers") or None,
    )
    mode = args["mode"]
    out: dict = {}
    chunks: list = []
    arrivals: list = []
    start = time.monotonic()
    try:
        if mode == "chat":
            raw = client.chat.completions.with_raw_response.create(**args["request"])
            out["completion"] = raw.parse().model_dump()
            out["headers"] = dict(raw.headers)
        elif mode == "many":
            results = []
            for item in args["requests"]:
                c = client.with_options(api_key=item["api_key"]) if item.get("api_key") else client
                try:
                    if item.get("stream"):
                        raw = c.chat.completions.with_raw_response.create(stream=True, **item["request"])
                        text = "".join((ch.choices[0].delta.content or "") for ch in raw.parse() if ch.choices)
                    else:
                        raw = c.chat.completions.with_raw_response.create(**item["request"])
                        text = raw.parse().choices[0].message.content
                    results.append({"request_id": raw.headers.get("x-request-id"), "content": text,
                                    "headers": dict(raw.headers)})
                except openai.APIStatusError as e:
                    results.append({"error": str(e), "class": type(e).__name__, "status": e.status_code,
                                    "body": e.body, "headers": dict(e.response.headers)})
                except openai.APIError as e:
                    results.append({"error": str(e), "class": type(e).__name__})
            out["results"] = results
        elif mode == "models":
            out["models"] = [m.model_dump() for m in client.models.list()]
        elif mode == "stream":
            raw = client.chat.completions.with_raw_response.create(stream=True, **args["request"])
            out["headers"] = dict(raw.headers)
            stream = raw.parse()
            released = False
            for chunk in stream:
                chunks.append(chunk.model_dump())
                arrivals.append(time.monotonic() - start)
                has_content = any(c.delta.content for c in chunk.choices)
                if args.get("release_url") and not released and has_content:
                    req = urllib.request.Request(args["release_url"], data=b"", method="POST")
                    urllib.request.urlopen(req, timeout=5).read()
                    released = True
                if args.get("close_after") and len(chunks) >= args["close_after"]:
                    stream.close()
                    out["closed"] = True
                    break
            out["released"] = released
        else:
            raise SystemExit(f"unknown mode {mode}")
    except openai.APIStatusError as e:
        out["error"] = {
            "class": type(e).__name__,
            "status": e.status_code,
            "body": e.body,
            "headers": dict(e.response.headers),
        }
    except openai.APIError as e:
        out["error"] = {"class": type(e).__name__, "message": e.message, "body": e.body}
    if mode == "stream":
        out["chunks"] = chunks
        out["arrivals"] = arrivals
        out["content"] = "".join(
            (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
        )
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
