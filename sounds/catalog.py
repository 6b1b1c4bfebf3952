"""The prompt catalog (prompt id -> Mandarin text) and where each prompt's WAV file lives."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

# Prompt ids become file names (<id>.wav), so they must be safe on every filesystem.
PROMPT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class CatalogError(Exception):
    """The catalog file is malformed, or a prompt id is unknown."""


class UnknownPromptError(CatalogError, KeyError):
    """A prompt id that is not in the catalog; a KeyError so mapping-style callers still work."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; keep it readable.
        return str(self.args[0]) if self.args else "unknown prompt"


def _validated(texts: Mapping[str, object], source: str) -> dict[str, str]:
    checked: dict[str, str] = {}
    for prompt_id, text in texts.items():
        if not isinstance(prompt_id, str) or not PROMPT_ID_PATTERN.fullmatch(prompt_id):
            raise CatalogError(f"{source}: prompt id {prompt_id!r} must match [A-Za-z0-9_-]+")
        if not isinstance(text, str):
            raise CatalogError(
                f"{source}: prompt {prompt_id!r} must be a string, got {type(text).__name__}"
            )
        if not text.strip():
            raise CatalogError(f"{source}: prompt {prompt_id!r} has empty text")
        checked[prompt_id] = text
    return checked


@dataclass(frozen=True)
class Catalog:
    """Every prompt the hotline can play, by id; ids are unique across the file's sections."""

    texts: Mapping[str, str]
    """Prompt id -> the Mandarin text it speaks (read-only)."""

    def __post_init__(self) -> None:
        texts = _validated(self.texts, "catalog")
        # Frozen dataclass: bypass __setattr__ once to store a read-only copy.
        object.__setattr__(self, "texts", MappingProxyType(texts))

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Load a catalog TOML file: sections of `id = "text"` entries."""
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read the prompt catalog: {exc}") from exc
        return cls.parse(source, source_name=str(path))

    @classmethod
    def shipped(cls) -> Catalog:
        """The catalog shipped inside the `sounds` package."""
        resource = files(__package__ or "sounds").joinpath("catalog.toml")
        return cls.parse(resource.read_text(encoding="utf-8"), source_name="sounds/catalog.toml")

    @classmethod
    def parse(cls, source: str, *, source_name: str = "<catalog>") -> Catalog:
        """Parse catalog TOML text; errors name the file, section and prompt id."""
        try:
            document: dict[str, Any] = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{source_name}: not valid TOML: {exc}") from exc
        texts: dict[str, str] = {}
        first_section: dict[str, str] = {}
        for section, entries in document.items():
            if not isinstance(entries, dict):
                raise CatalogError(
                    f"{source_name}: top-level key {section!r} must be a [section] of prompts"
                )
            where = f"{source_name} [{section}]"
            for prompt_id, text in _validated(entries, where).items():
                if prompt_id in texts:
                    raise CatalogError(
                        f"{where}: duplicate prompt id {prompt_id!r}"
                        f" (already defined in [{first_section[prompt_id]}])"
                    )
                texts[prompt_id] = text
                first_section[prompt_id] = section
        return cls(texts)

    def text(self, prompt_id: str) -> str:
        """The text of a prompt; raises UnknownPromptError for an id not in the catalog."""
        try:
            return self.texts[prompt_id]
        except KeyError:
            raise UnknownPromptError(f"unknown prompt id {prompt_id!r}") from None

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.texts

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)


def shipped_dir() -> Path:
    """The package's folder of rendered prompts (`sounds/zh/`)."""
    folder = files(__package__ or "sounds").joinpath("zh")
    if not isinstance(folder, Path):
        # Only a zipped install gives a non-filesystem Traversable; players need real paths.
        raise CatalogError(f"the sounds package is not on a filesystem: {folder}")
    return folder


class PromptLibrary:
    """Finds the WAV file for a prompt id: studio recordings first, then the shipped renders."""

    def __init__(self, catalog: Catalog, dirs: Sequence[Path]) -> None:
        self.catalog = catalog
        self.dirs: tuple[Path, ...] = tuple(dirs)

    def path(self, prompt_id: str) -> Path | None:
        """The first `<dir>/<id>.wav` that exists, or None (play by TTS or skip).

        Raises UnknownPromptError for an id the catalog does not know: that is a flow bug, not a
        missing recording.
        """
        if prompt_id not in self.catalog:
            raise UnknownPromptError(f"unknown prompt id {prompt_id!r}")
        for folder in self.dirs:
            candidate = folder / f"{prompt_id}.wav"
            if candidate.is_file():
                return candidate
        return None
