"""Settings: defaults, HOTLINE_* variables, the TOML file, and the errors for bad input."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ivr.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HOTLINE_* variable from the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_embedded_run() -> None:
    s = load_settings()
    assert s.flow_file is None
    assert s.sounds_dir is None
    assert s.var_dir == Path("var")
    assert s.web_host == "127.0.0.1"
    assert s.web_port == 8080
    assert s.log_level == "info"
    assert s.log_format == "auto"
    assert s.node_id == socket.gethostname()
    assert s.vosk_model is None
    assert s.speech_min_confidence == 0.5
    assert s.shutdown_grace_seconds == 10.0
    assert s.heap_trim_seconds == 300.0


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_shipped_flow_is_inside_the_package() -> None:
    import ivr

    flow = load_settings().resolved_flow_file()
    assert flow == Path(ivr.__file__).parent / "flows" / "95598.toml"


def test_flow_file_overrides_the_shipped_one(tmp_path: Path) -> None:
    own = tmp_path / "my-flow.toml"
    assert Settings(flow_file=own).resolved_flow_file() == own


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_WEB_PORT", "0")
    monkeypatch.setenv("HOTLINE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("HOTLINE_NODE_ID", "ivr-7")
    monkeypatch.setenv("HOTLINE_VOSK_MODEL", "/models/vosk-cn")
    monkeypatch.setenv("HOTLINE_HEAP_TRIM_SECONDS", "0")
    s = load_settings()
    assert s.heap_trim_seconds == 0.0
    assert s.web_port == 0
    assert s.log_level == "debug"
    assert s.node_id == "ivr-7"
    assert s.vosk_model == Path("/models/vosk-cn")


def test_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_VOSK_MODEL", "")
    assert load_settings().vosk_model is None


def test_toml_file_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "hotline.toml",
        'web_port = 9000\nlog_format = "json"\nsounds_dir = "studio"\n',
    )
    monkeypatch.setenv("HOTLINE_WEB_PORT", "9100")
    s = load_settings(config)
    assert s.web_port == 9100  # the variable wins over the file
    assert s.log_format == "json"  # the file wins over the default
    assert s.sounds_dir == Path("studio")
    assert s.web_host == "127.0.0.1"  # the default where neither says anything


def test_config_path_from_hotline_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "from-env.toml", "speech_min_confidence = 0.8\n")
    monkeypatch.setenv("HOTLINE_CONFIG", str(config))
    assert load_settings().speech_min_confidence == 0.8


def test_argument_beats_hotline_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_CONFIG", str(tmp_path / "missing.toml"))
    given = write(tmp_path / "given.toml", "web_port = 1234\n")
    assert load_settings(given).web_port == 1234


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"missing\.toml does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_missing_file_named_by_hotline_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTLINE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(SettingsError, match="HOTLINE_CONFIG"):
        load_settings()


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    config = write(tmp_path / "typo.toml", "web_prot = 9000\n")
    with pytest.raises(SettingsError) as info:
        load_settings(config)
    message = str(info.value)
    assert "web_prot: unknown setting" in message
    assert "web_port" in message  # the known settings are listed


def test_malformed_toml_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "web_port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("HOTLINE_WEB_PORT", "70000", "web_port: Input should be less than or equal to 65535"),
        ("HOTLINE_WEB_PORT", "-1", "web_port: Input should be greater than or equal to 0"),
        ("HOTLINE_WEB_PORT", "http", "web_port: Input should be a valid integer"),
        ("HOTLINE_LOG_LEVEL", "verbose", "log_level: Input should be 'debug'"),
        ("HOTLINE_LOG_FORMAT", "xml", "log_format: Input should be 'auto'"),
        ("HOTLINE_SPEECH_MIN_CONFIDENCE", "1.5", "speech_min_confidence"),
        ("HOTLINE_SHUTDOWN_GRACE_SECONDS", "-2", "shutdown_grace_seconds"),
        ("HOTLINE_HEAP_TRIM_SECONDS", "-1", "heap_trim_seconds"),
    ],
)
def test_bad_values_name_the_setting_and_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert variable in message
    assert repr(value) in message


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "hotline.toml", "web_port = 99999\n")
    with pytest.raises(SettingsError, match=r"'web_port' in .*hotline\.toml"):
        load_settings(config)


def test_settings_are_immutable() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.web_port = 1
