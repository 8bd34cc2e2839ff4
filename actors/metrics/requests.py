"""API request counts and latency by verb, told by the API server (a RequestObserver)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: seconds; most verbs answer in milliseconds, VM and storage operations in seconds
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 120.0, 300.0)


class RequestMetrics:
    """Counts each answered request by verb and code (0: a result), and its latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("vdsm_api_requests", "API requests answered, by verb and "
                                "code (0: a result, else the error code)", ["verb", "code"],
                                registry=registry)
        self.latency = Histogram("vdsm_api_request_duration_seconds", "Time from a request's "
                                 "acceptance to its answer, by verb", ["verb"],
                                 buckets=BUCKETS, registry=registry)

    def observe(self, verb: str, code: int, seconds: float) -> None:
        self.requests.labels(verb, str(code)).inc()
        self.latency.labels(verb).observe(seconds)
