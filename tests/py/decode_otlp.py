"""Decodes OTLP ExportTraceServiceRequest payloads with the official opentelemetry-proto
package — an independent decoder for what Beacon exports.

Usage: decode_otlp.py FILE...   (each file: one uncompressed protobuf request body)
Prints a JSON list of spans: ids as hex, attributes as a flat {key: value} map, plus the
resource attributes and scope of each span.
"""

import json
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def main() -> None:
    spans = []
    for path in sys.argv[1:]:
        req = ExportTraceServiceRequest()
        with open(path, "rb") as f:
            req.ParseFromString(f.read())
        for rs in req.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "flags": s.flags,
                            "name": s.name,
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "status": {"code": s.status.code, "message": s.status.message},
                            "events": len(s.events),
                            "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
    print(json.dumps(spans))


if __name__ == "__main__":
    main()
