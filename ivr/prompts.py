"""`hotline sounds build`: render the prompt catalog to the shipped 8 kHz WAVs."""

from __future__ import annotations

from collections.abc import Sequence

from ivr.settings import Settings
from sounds.build import BuildError, build_prompts
from sounds.catalog import Catalog, shipped_dir


def build_command(settings: Settings, *, force: bool, only: Sequence[str]) -> int:
    """Render missing or changed prompts (all with ``force``); print what changed."""
    catalog = Catalog.shipped()
    unknown = [p for p in only if p not in catalog]
    if unknown:
        print(f"unknown prompt id(s): {', '.join(unknown)}")
        return 1
    try:
        report = build_prompts(catalog, shipped_dir(), only=only or None, force=force)
    except BuildError as exc:
        print(f"cannot render prompts: {exc}")
        return 1
    print(
        f"rendered {len(report.rendered)}, unchanged {len(report.unchanged)}, "
        f"removed {len(report.removed)} (into {shipped_dir()})"
    )
    for prompt_id in report.rendered:
        print(f"  rendered {prompt_id}: {catalog.text(prompt_id)}")
    return 0
