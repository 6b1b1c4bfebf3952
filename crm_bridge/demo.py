"""Demo records for the embedded CRM (`hotline crm seed-demo`): a few customers, bills and
outage notices, so a newcomer's calls find a customer, a balance and an outage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crm_bridge.model import Address, BillSummary, Customer, Outage, OutageKind
from crm_bridge.numbers import CHINA_TIME


@dataclass(frozen=True)
class DemoSeed:
    """What seeding loaded."""

    customers: int
    """Customers written (added or brought back to the demo values)."""
    bills: int
    """Bills written."""
    outages_added: int
    """Outage notices added (the ones already posted and not ended are left alone)."""


def demo_data(now: float) -> tuple[list[Customer], list[BillSummary], list[Outage]]:
    """The demo records, with times and due dates around ``now``.

    The numbers match the ones `hotline call` uses by default (caller 13800138000) and the
    example calls in the README and ``tests/ivr/scripts`` (accounts 1234567890, 3201234567).
    """
    today = datetime.fromtimestamp(now, CHINA_TIME).date()
    nanjing = {"province": "江苏省", "city": "南京市"}
    customers = [
        Customer(
            customer_id="demo-0001",
            name="张伟",
            phones=("13800138000",),
            accounts=("1234567890",),
            address=Address(**nanjing, district="鼓楼区", street="中山北路", number="100号"),
        ),
        Customer(
            customer_id="demo-0002",
            name="李娜",
            phones=("13900139000",),
            accounts=("3201234567",),
            address=Address(**nanjing, district="玄武区", street="珠江路", number="88号"),
        ),
        Customer(
            customer_id="demo-0003",
            name="王芳",
            phones=("13700137000", "02584001234"),
            accounts=("3209876543", "3209876544"),
            address=Address(**nanjing, district="秦淮区", street="中华路", number="12号"),
        ),
    ]
    bills = [
        BillSummary("1234567890", 12850, 0, (today + timedelta(days=15)).isoformat()),
        BillSummary("3201234567", -4320, 4320, (today + timedelta(days=5)).isoformat()),
        BillSummary("3209876543", 0, 21600, (today + timedelta(days=10)).isoformat()),
    ]
    hour = 3600.0
    outages = [
        Outage(
            outage_id="",
            area=Address(**nanjing, district="鼓楼区"),
            kind=OutageKind.FAULT,
            cause="线路故障抢修",
            starts_at=now - hour,
            restore_at=now + 3 * hour,
        ),
        Outage(
            outage_id="",
            area=Address(**nanjing, district="玄武区", street="珠江路"),
            kind=OutageKind.PLANNED,
            cause="线路检修",
            starts_at=now + 24 * hour,
            restore_at=now + 32 * hour,
        ),
    ]
    return customers, bills, outages
