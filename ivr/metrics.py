"""Prometheus metrics of the hotline, in one registry that the web app's /metrics serves.

A module-level `REGISTRY` rather than prometheus_client's global one, so nothing else that
happens to be imported (or another app in the same test process) adds series to our endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()
"""The registry `GET /metrics` exposes."""

_Labelled = TypeVar("_Labelled", Counter, Gauge)


def _prefilled(metric: _Labelled, label: str, values: Iterable[str]) -> _Labelled:
    """`metric` with a series at 0 for each known value of `label`, so rate() and alerts see
    the series before the first event."""
    for value in values:
        metric.labels(**{label: value})
    return metric


CHANNELS = ("sip", "twilio", "sim")
"""Where a call came in (the `channel` label of `CALLS_STARTED`)."""

FAILURE_KINDS = ("no_input", "no_match", "escalated")
"""Why a dialog step failed (the `kind` label of `DIALOG_FAILURES`)."""

CALLS_STARTED = _prefilled(
    Counter(
        "hotline_calls_started",
        "Calls answered by the IVR, by channel.",
        ["channel"],
        registry=REGISTRY,
    ),
    "channel",
    CHANNELS,
)
CALLS_ENDED = Counter(
    "hotline_calls_ended",
    "Calls that ended, by outcome (self-served, transferred, abandoned, ...).",
    ["outcome"],
    registry=REGISTRY,
)
CALLS_ACTIVE = Gauge(
    "hotline_calls_active",
    "Calls in progress on this node.",
    registry=REGISTRY,
)
DIALOG_FAILURES = _prefilled(
    Counter(
        "hotline_dialog_failures",
        "Dialog steps that failed: no input, no match, or escalated to an agent after retries.",
        ["kind"],
        registry=REGISTRY,
    ),
    "kind",
    FAILURE_KINDS,
)
SERVICE_REQUESTS = Counter(
    "hotline_service_requests",
    "Requests to back-end services (CRM, routing, speech), by service and result.",
    ["service", "result"],
    registry=REGISTRY,
)

# --- SIP and RTP (the SIP front end updates these) ---

SIP_CALLS_REFUSED = _prefilled(
    Counter(
        "hotline_sip_calls_refused",
        "INVITEs refused before answering, by reason (draining, full, codec, no_rtp_port).",
        ["reason"],
        registry=REGISTRY,
    ),
    "reason",
    ("draining", "full", "codec", "no_rtp_port"),
)
SIP_MALFORMED = Counter(
    "hotline_sip_malformed",
    "SIP datagrams dropped as malformed (unparseable, oversized, missing headers).",
    registry=REGISTRY,
)
SIP_REGISTERS_DROPPED = Counter(
    "hotline_sip_registers_dropped",
    "REGISTERs left unanswered by the brute-force throttle (a source or user over its limit "
    "of failed digest proofs).",
    registry=REGISTRY,
)
HTTP_MALFORMED = Counter(
    "hotline_http_malformed",
    "HTTP requests the web server's parser refused (answered 400 and closed).",
    registry=REGISTRY,
)
RTP_STREAMS = Gauge(
    "hotline_rtp_streams",
    "RTP streams on the shared send clock.",
    registry=REGISTRY,
)
RTP_SEND_GAP = Gauge(
    "hotline_rtp_send_gap_seconds",
    "Gap between two rounds of the 20 ms send clock over its recent window, by statistic.",
    ["stat"],
    registry=REGISTRY,
)
RTP_TICKS_SKIPPED = Gauge(
    "hotline_rtp_ticks_skipped",
    "Send-clock ticks dropped because the loop ran too late (since start).",
    registry=REGISTRY,
)

SIP_TABLES = ("dialogs", "sessions", "agent_legs", "transactions")
"""What the SIP front end holds per call (the `table` label of `SIP_TABLE_SIZE`)."""

SIP_TABLE_SIZE = _prefilled(
    Gauge(
        "hotline_sip_table_size",
        "Entries the SIP front end holds, by table: dialogs (the UAS call table: ringing, up or "
        "ending), sessions (calls running the flow), agent_legs (outbound legs to agents), "
        "transactions (SIP transactions kept, retransmission absorbers included). All return to 0 "
        "when no call is up: a leak shows as a floor that rises.",
        ["table"],
        registry=REGISTRY,
    ),
    "table",
    SIP_TABLES,
)
ASYNCIO_TASKS = Gauge(
    "hotline_asyncio_tasks",
    "Tasks alive on the node's event loop (calls, their media and timers, the web app's).",
    registry=REGISTRY,
)

# --- memory (ivr/malloc.py sets these at start-up and after every heap trim) ---

MEMORY_KINDS = ("rss", "malloc_arena", "malloc_mmapped", "malloc_in_use", "malloc_free", "sqlite")
"""The `kind` label of `MEMORY_BYTES`."""

MEMORY_BYTES = _prefilled(
    Gauge(
        "hotline_memory_bytes",
        "The node's memory, bytes, as of the latest heap trim: rss (resident set), and glibc's "
        "allocator: malloc_arena (taken from the OS for its arenas), malloc_mmapped (large blocks "
        "mapped on their own), malloc_in_use (allocated, not freed), malloc_free (free chunks it "
        "keeps; after a trim their whole pages are no longer resident); sqlite (what SQLite holds "
        "of it: the CRM store's and outbox's page caches, which fill as the files grow, then "
        "hold). The malloc_* stay 0 where the C library is not glibc.",
        ["kind"],
        registry=REGISTRY,
    ),
    "kind",
    MEMORY_KINDS,
)
PYTHON_BLOCKS = Gauge(
    "hotline_python_allocated_blocks",
    "Memory blocks Python's own allocator has handed out (sys.getallocatedblocks), as of the "
    "latest heap trim: a leak of Python objects rises here, not only in rss.",
    registry=REGISTRY,
)

# --- callbacks dialed out (ivr/sip/callbacks.py) ---

CALLBACK_OUTCOMES = (
    "connected",
    "agent_unreachable",
    "customer_unanswered",
    "no_trunk",
    "invalid_number",
    "stopped",
)
"""How a callback an agent accepted ended (the `outcome` label of `CALLBACKS`)."""

CALLBACKS = _prefilled(
    Counter(
        "hotline_callbacks",
        "Callbacks dialed out, by outcome: connected (the customer answered and was bridged to the "
        "agent), agent_unreachable, customer_unanswered (busy, no answer, refused), no_trunk (none "
        "configured), invalid_number, stopped (the node stopped first).",
        ["outcome"],
        registry=REGISTRY,
    ),
    "outcome",
    CALLBACK_OUTCOMES,
)

# --- blind transfers by REFER (ivr/sip/refer_transfers.py, sip_transfer_mode = "refer") ---

REFER_OUTCOMES = ("transferred", "refused", "failed", "timeout", "caller_left")
"""How a transfer by REFER ended (the `outcome` label of `SIP_REFERS`)."""

SIP_REFERS = _prefilled(
    Counter(
        "hotline_sip_refers",
        "Blind transfers by REFER, by outcome: transferred (the agent answered, the hotline "
        "left the call), refused (a non-2xx to the REFER), failed (the PBX reported a failure), "
        "timeout (no outcome in time), caller_left (the call ended first: the caller hung up, "
        "or the node stopped). refused, failed and timeout fall back to the bridge.",
        ["outcome"],
        registry=REGISTRY,
    ),
    "outcome",
    REFER_OUTCOMES,
)

# --- routing, the tenant's figures read from Redis at each scrape (ivr/routing_metrics.py);
# every node exports the same values: aggregate across nodes with max, not sum ---

ROUTING_WAITING = Gauge(
    "hotline_routing_waiting",
    "Callers in line, not yet offered to an agent, by queue (the tenant's, from routing).",
    ["queue"],
    registry=REGISTRY,
)
ROUTING_LONGEST_WAIT = Gauge(
    "hotline_routing_longest_wait_seconds",
    "Seconds since the longest-waiting unanswered caller entered, by queue.",
    ["queue"],
    registry=REGISTRY,
)
ROUTING_AGENTS = Gauge(
    "hotline_routing_agents",
    "Logged-in agents by state (available, reserved, on_call, wrap_up, not_ready).",
    ["state"],
    registry=REGISTRY,
)
ROUTING_ASSIGNMENTS = Counter(
    "hotline_routing_assignments",
    "Calls and callbacks offered (reserved) to an agent, by queue, since this node first "
    "read routing's event stream.",
    ["queue"],
    registry=REGISTRY,
)
ROUTING_RESERVATION_TIMEOUTS = Counter(
    "hotline_routing_reservation_timeouts",
    "Offers an agent did not answer in time (RONA): the call went back in line, by queue.",
    ["queue"],
    registry=REGISTRY,
)

# --- RTP reception quality (ivr/sip/server.py, when a call's media closes) ---

RTP_PACKETS_RECEIVED = Counter(
    "hotline_rtp_packets_received",
    "Valid RTP packets received from callers and agent phones, counted when a call ends.",
    registry=REGISTRY,
)
RTP_PACKETS_LOST = Counter(
    "hotline_rtp_packets_lost",
    "RTP packets missing from callers' and agent phones' streams (sequence number gaps, RFC "
    "3550 A.3), counted when a call ends; loss ratio = lost / (lost + received).",
    registry=REGISTRY,
)
