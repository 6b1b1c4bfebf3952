"""The hotline's understanding from its settings; `hotline call` resolves intent and address."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ivr.settings import Settings, SettingsError
from ivr.transports.sim import run_interactive
from ivr.understanding import load_understander
from speech.streets import StreetList


def test_defaults_are_the_shipped_street_list_and_no_region() -> None:
    understander = load_understander(Settings())
    assert (understander.province, understander.city) == ("", "")
    assert understander.streets == StreetList.shipped()


def test_the_operators_street_list_and_region(tmp_path: Path) -> None:
    streets = tmp_path / "streets.csv"
    streets.write_text(
        "province,city,district,street,aliases\n江苏省,南京市,鼓楼区,中山北路,\n",
        encoding="utf-8",
    )
    understander = load_understander(
        Settings(service_province="江苏省", service_city="南京市", service_streets=streets)
    )
    result = understander("停电了 钟山北路一百号")
    assert result.intent == "fault"
    assert result.address is not None
    assert (result.address.district, result.address.street) == ("鼓楼区", "中山北路")
    assert result.needs_confirmation  # a homophone street: read back


def test_a_bad_street_list_names_the_setting(tmp_path: Path) -> None:
    streets = tmp_path / "streets.csv"
    streets.write_text("street\n经十路\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"service_streets: .*streets.csv:1"):
        load_understander(Settings(service_streets=streets))
    with pytest.raises(SettingsError, match=r"service_streets: .*cannot read"):
        load_understander(Settings(service_streets=tmp_path / "missing.csv"))


def test_an_unknown_region_names_the_settings() -> None:
    with pytest.raises(SettingsError, match="service_province/service_city"):
        load_understander(Settings(service_province="火星省"))


async def test_hotline_call_resolves_intent_and_address_from_typed_speech() -> None:
    out = io.StringIO()
    stdin = io.StringIO("say: 我家停电了 历下区经十路 88 号\n#\nhangup\n")
    summary = await run_interactive(Settings(), "13800138000", "95598", stdin, out)
    printed = out.getvalue()
    # The fault branch (asks for the account, not for the address again) ...
    assert "请输入户号" in printed
    assert "请说出停电或故障的地址" not in printed
    # ... and the address in parts, handed to the outage lookup.
    assert "'district': '历下区', 'street': '经十路'" in printed
    assert summary.slots["intent"] == "fault"
    assert summary.slots["address.number"] == "88号"
    assert summary.path[:3] == ["welcome", "main_menu", "fault_account"]
