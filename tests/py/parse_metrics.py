"""Parses Beacon's /metrics with the prometheus_client library's own parsers.

Reads the exposition on stdin; argv[1] is the Content-Type Beacon served. OpenMetrics text
is parsed with the strict OpenMetrics parser, anything else with the Prometheus text parser.
Prints every sample as JSON ({"name", "labels", "value"}); exits 1 with the parser's message
when the exposition cannot be parsed (the scraper would lose every metric).
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus


def main() -> int:
    text = sys.stdin.read()
    content_type = sys.argv[1] if len(sys.argv) > 1 else ""
    parse = openmetrics if "openmetrics" in content_type else prometheus
    try:
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value}
            for family in parse(text)
            for s in family.samples
        ]
    except Exception as e:  # the parsers raise ValueError and friends
        print(f"unparsable exposition: {e!r}", file=sys.stderr)
        return 1
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
