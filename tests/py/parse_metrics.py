"""Parses Beacon's /metrics with the prometheus_client library's own parsers.

Reads the exposition on stdin; argv[1] is the Content-Type Beacon served. The text goes
through the Prometheus text parser (`prometheus_client.parser`) and, when it is served as
OpenMetrics, through the strict OpenMetrics parser as well; both must read the same samples.
Prints every sample as JSON ({"name", "labels", "value"}); exits 1 with the parser's message
when the exposition cannot be parsed (the scraper would lose every metric).
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus


def samples(parse, text):
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for family in parse(text)
        for s in family.samples
    ]


def main() -> int:
    text = sys.stdin.read()
    content_type = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        classic = samples(prometheus, text)
        if "openmetrics" in content_type:
            strict = samples(openmetrics, text)
            if len(strict) != len(classic):
                print(f"the parsers disagree: {len(classic)} vs {len(strict)} samples", file=sys.stderr)
                return 1
    except Exception as e:  # the parsers raise ValueError and friends
        print(f"unparsable exposition: {e!r}", file=sys.stderr)
        return 1
    print(json.dumps(classic))
    return 0


if __name__ == "__main__":
    sys.exit(main())
