"""The prompt catalog loader and the prompt library's file lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from sounds import readback
from sounds.catalog import Catalog, CatalogError, PromptLibrary, UnknownPromptError, shipped_dir


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_merges_sections(tmp_path: Path) -> None:
    path = write(tmp_path, '[readback]\ndigit_0 = "零"\n\n[prompts]\nwelcome = "您好"\n')
    catalog = Catalog.load(path)
    assert dict(catalog.texts) == {"digit_0": "零", "welcome": "您好"}
    assert catalog.text("welcome") == "您好"
    assert "digit_0" in catalog
    assert "nope" not in catalog
    assert len(catalog) == 2


def test_duplicate_id_across_sections_names_id_and_sections(tmp_path: Path) -> None:
    path = write(tmp_path, '[readback]\nhello = "一"\n\n[prompts]\nhello = "二"\n')
    with pytest.raises(
        CatalogError, match=r"\[prompts\].*duplicate prompt id 'hello'.*\[readback\]"
    ):
        Catalog.load(path)


def test_non_string_value_names_id_and_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[prompts]\nwelcome = 3\n")
    with pytest.raises(CatalogError, match=r"\[prompts\].*'welcome' must be a string, got int"):
        Catalog.load(path)


def test_nested_table_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[prompts.menu]\nwelcome = "您好"\n')
    with pytest.raises(CatalogError, match=r"\[prompts\].*'menu' must be a string, got dict"):
        Catalog.load(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('welcome = "您好"\n', "top-level key 'welcome'"),
        ('[prompts]\nwelcome = "  "\n', "'welcome' has empty text"),
        ('[prompts]\n"../evil" = "您好"\n', "prompt id '../evil'"),
        ("[prompts\n", "not valid TOML"),
    ],
)
def test_malformed_catalogs_are_rejected(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.load(write(tmp_path, toml))


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(tmp_path / "absent.toml")


def test_unknown_id_is_a_key_error() -> None:
    catalog = Catalog({"welcome": "您好"})
    with pytest.raises(UnknownPromptError, match="unknown prompt id 'bye'"):
        catalog.text("bye")
    with pytest.raises(KeyError):
        catalog.text("bye")


def test_texts_are_read_only() -> None:
    source = {"welcome": "您好"}
    catalog = Catalog(source)
    source["bye"] = "再见"
    assert "bye" not in catalog
    with pytest.raises(TypeError):
        catalog.texts["bye"] = "再见"  # type: ignore[index]


def test_shipped_catalog_loads() -> None:
    catalog = Catalog.shipped()
    assert catalog.text("digit_1_yao") == "幺"


def test_every_readback_id_is_in_the_shipped_catalog() -> None:
    catalog = Catalog.shipped()
    missing = sorted(readback.ALL_READBACK_IDS - set(catalog.texts))
    assert missing == []


def test_library_searches_dirs_in_order(tmp_path: Path) -> None:
    studio, rendered = tmp_path / "studio", tmp_path / "zh"
    studio.mkdir()
    rendered.mkdir()
    (rendered / "welcome.wav").write_bytes(b"")
    (rendered / "bye.wav").write_bytes(b"")
    (studio / "welcome.wav").write_bytes(b"")
    catalog = Catalog({"welcome": "您好", "bye": "再见", "hold": "请稍候"})
    library = PromptLibrary(catalog, [studio, rendered])
    assert library.path("welcome") == studio / "welcome.wav"
    assert library.path("bye") == rendered / "bye.wav"
    assert library.path("hold") is None
    with pytest.raises(UnknownPromptError):
        library.path("nope")


def test_shipped_dir_holds_the_rendered_readback_prompts() -> None:
    folder = shipped_dir()
    assert folder.name == "zh"
    library = PromptLibrary(Catalog.shipped(), [folder])
    assert library.path("digit_0") == folder / "digit_0.wav"
