"""Prompts: the catalog of Mandarin prompt texts, their rendered 8 kHz WAVs, and readback."""

from sounds.catalog import (
    Catalog,
    CatalogError,
    PromptLibrary,
    UnknownPromptError,
    shipped_dir,
)

__all__ = ["Catalog", "CatalogError", "PromptLibrary", "UnknownPromptError", "shipped_dir"]
