"""The committed prompts: every prompt the flow can play exists, is current and is not silent."""

from __future__ import annotations

import json
import wave

import pytest

from ivr.flow.model import Readback, load_flow
from ivr.settings import load_settings
from sounds.audio import is_non_silent
from sounds.build import MANIFEST_NAME, text_digest
from sounds.catalog import Catalog, shipped_dir

CATALOG = Catalog.shipped()
IDS = sorted(CATALOG)


def flow_prompt_ids() -> set[str]:
    flow = load_flow(load_settings().resolved_flow_file())
    ids = {
        p
        for p in (flow.flow.no_input_prompt, flow.flow.no_match_prompt, flow.flow.escalate_prompt)
        if p
    }
    for node in flow.nodes.values():
        for name in ("prompts", "hold_prompts", "position_prompts", "confirm_prompts"):
            for item in getattr(node, name, ()):
                if not isinstance(item, Readback):
                    ids.add(item)
    return ids


def test_every_prompt_the_flow_plays_is_in_the_catalog() -> None:
    missing = flow_prompt_ids() - set(CATALOG)
    assert not missing


@pytest.mark.parametrize("prompt_id", IDS)
def test_prompt_is_rendered_8khz_mono_and_not_silent(prompt_id: str) -> None:
    path = shipped_dir() / f"{prompt_id}.wav"
    assert path.is_file(), f"run `hotline sounds build` to render {prompt_id}"
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() > 8000 * 0.1  # even one syllable lasts longer than 100 ms
    assert is_non_silent(path)


def test_rendered_prompts_match_the_current_texts() -> None:
    """A catalog text changed without re-rendering would play the old words."""
    manifest = json.loads((shipped_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    stale = [
        pid for pid in IDS if manifest.get(pid) != text_digest(CATALOG.text(pid), "cmn-latn-pinyin")
    ]
    assert not stale, f"re-render with `hotline sounds build`: {stale}"
