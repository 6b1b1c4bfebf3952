"""The one typed settings object: TOML file, then `HOTLINE_*` variables, then safe defaults.

Settings are loaded once at the edge (`hotline ...` in `ivr.cli`) with `load_settings()` and
passed in; no other module reads environment variables. `HOTLINE_CONFIG` (the settings file's
path) is read here and nowhere else.
"""

from __future__ import annotations

import os
import socket
import tomllib
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "HOTLINE_"
CONFIG_ENV = "HOTLINE_CONFIG"
"""Environment variable naming the TOML settings file when `--config` is not given."""

SHIPPED_FLOW = "flows/95598.toml"
"""The call flow shipped inside the `ivr` package, used when `flow_file` is unset."""

# The TOML file for the Settings() being built by load_settings(). A context variable rather than
# a class attribute so two threads loading different files cannot see each other's path.
_toml_file: ContextVar[Path | None] = ContextVar("hotline_settings_toml_file", default=None)


class SettingsError(Exception):
    """The settings could not be loaded; the message says which value or file is wrong."""


class Settings(BaseSettings):
    """Everything an operator can configure. Each field is `HOTLINE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        # `HOTLINE_VOSK_MODEL=` (empty) means "unset", not the current directory.
        env_ignore_empty=True,
        validate_default=True,
    )

    flow_file: Path | None = Field(
        default=None,
        description="call-flow TOML file; unset = the flow shipped in the package (95598.toml)",
    )
    sounds_dir: Path | None = Field(
        default=None,
        description=(
            "folder of studio recordings (<prompt id>.wav) that replace the rendered prompts "
            "with the same ids"
        ),
    )
    var_dir: Path = Field(
        default=Path("var"),
        description="runtime data of the embedded stores (relative to the working directory)",
    )
    web_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="address the web server (health page, /metrics) listens on",
    )
    web_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="TCP port of the web server; 0 = pick a free port (logged at start-up)",
    )
    sip_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="address the SIP front end listens on (UDP); 0.0.0.0 for all interfaces",
    )
    sip_port: int = Field(
        default=5060,
        ge=0,
        le=65535,
        description="UDP port for SIP; 0 = pick a free port (logged at start-up)",
    )
    sip_advertised_host: str | None = Field(
        default=None,
        description="address written into Contact and SDP when it differs from sip_host (NAT)",
    )
    sip_ring_seconds: float = Field(
        default=0.0,
        ge=0.0,
        le=30.0,
        description="how long to ring (180) before answering; 0 = answer at once",
    )
    sip_agent_ring_seconds: float = Field(
        default=20.0,
        gt=0.0,
        le=120.0,
        description="how long an agent's phone may ring once the agent accepted (a caller's or a "
        "callback's); unanswered, the call goes back to its place and the agent is not ready",
    )
    sip_max_calls: int = Field(
        default=500,
        ge=1,
        description="calls carried at once; more are refused with 503 and Retry-After",
    )
    sip_send_clock: Literal["thread", "loop"] = Field(
        default="thread",
        description="what sends every call's RTP each 20 ms: a thread of its own (thread), not "
        "delayed by a busy event loop, or a task on the loop (loop); see decision 0022",
    )
    sip_rtp_port_min: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="first UDP port for call media (RTP); 0 with sip_rtp_port_max 0 = any free "
        "port the OS gives",
    )
    sip_rtp_port_max: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="last UDP port for call media; a call that finds every even port of the "
        "range taken is refused with 503",
    )
    sip_register_attempts_per_source: int = Field(
        default=20,
        ge=1,
        description="failed REGISTER proofs (403) one source address may make per "
        "sip_register_window_seconds before its REGISTERs are dropped unanswered",
    )
    sip_register_attempts_per_user: int = Field(
        default=10,
        ge=1,
        description="failed REGISTER proofs for one extension (from anywhere) per window before "
        "that extension's REGISTERs are dropped unanswered",
    )
    sip_register_window_seconds: float = Field(
        default=300.0,
        gt=0.0,
        le=86400.0,
        description="the REGISTER throttle's window: a source or extension over its limit is "
        "refused until this long after its latest failure",
    )
    sip_session_expires: int = Field(
        default=1800,
        ge=90,
        description="RFC 4028 session interval in seconds: a call not refreshed in time is ended",
    )
    sip_agents_file: Path | None = Field(
        default=None,
        description=(
            "TOML file of agent softphone credentials ([agents.<extension>] ha1 = md5 of "
            "'extension:realm:password', or password); set = the built-in registrar answers "
            "REGISTER, unset = REGISTER gets 405"
        ),
    )
    sip_realm: str = Field(
        default="hotline",
        min_length=1,
        description="digest realm of the built-in registrar (stored ha1 hashes depend on it)",
    )
    sip_register_min_expires: int = Field(
        default=60,
        ge=1,
        description="shortest registration an agent phone may ask for; shorter gets 423",
    )
    sip_register_max_expires: int = Field(
        default=3600,
        ge=1,
        description="longest registration granted (seconds); longer requests are cut to this",
    )
    sip_upstream_registrar: str | None = Field(
        default=None,
        description="IP:port of an upstream PBX/registrar the hotline registers itself at "
        "(unset = no upstream registration); never delays start-up",
    )
    sip_upstream_user: str = Field(
        default="95598", min_length=1, description="user registered upstream (AOR and digest)"
    )
    sip_upstream_password: str = Field(default="", description="digest password upstream")
    sip_upstream_expires: int = Field(
        default=300, ge=1, description="registration interval asked of the upstream registrar"
    )
    sip_callback_trunk: str | None = Field(
        default=None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$",
        description="host:port of the PBX/SBC that reaches the public network; a callback an "
        "agent accepts is dialed there as sip:<number>@host:port from sip_upstream_user (digest "
        "answered with sip_upstream_password); unset = callbacks are logged and ended, not dialed",
    )
    sip_transfer_mode: Literal["bridge", "refer"] = Field(
        default="bridge",
        description="how a caller reaches the agent routing connected: bridge = the hotline "
        "calls the agent's phone and stays in the media path (recording, survey); refer = a "
        "blind transfer by REFER to the caller's PBX/SBC (RFC 3515/5589), the hotline leaves the "
        "call once the agent answers; a refused or failed REFER falls back to the bridge",
    )
    rtp_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="a call whose caller sent no RTP for this long is hung up (dead peer)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="lowest level written to the log"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="log line format; auto = console on a terminal, JSON lines otherwise",
    )
    node_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="name of this IVR node in logs, health and routing (default: the host name)",
    )
    vosk_model: Path | None = Field(
        default=None,
        description="folder of a Vosk speech model; unset = DTMF-only (keypad) menus",
    )
    speech_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="recognizer threads (each can use one core: Vosk runs outside the GIL)",
    )
    speech_max_streams: int = Field(
        default=60,
        ge=1,
        description="calls listened to at once; further calls get keypad-only menus",
    )
    speech_max_free_streams: int = Field(
        default=2,
        ge=0,
        description="free-form (address) utterances recognized at once; more wait on keys",
    )
    speech_end_silence: float = Field(
        default=0.8,
        gt=0,
        description="seconds of silence after speech that end an utterance",
    )
    speech_max_utterance: float = Field(
        default=15.0,
        gt=0,
        description="seconds after which an utterance is cut and recognized as it stands",
    )
    speech_min_confidence: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="recognition results below this confidence count as no-match",
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis (>= 6.2) or Valkey for routing, e.g. redis://host:6379/0; unset = the "
            "embedded Redis server started by the hotline, data under var_dir"
        ),
    )
    routing_tenant: str = Field(
        default="default",
        pattern=r"^[^\s:|{}]{1,64}$",
        description="routing key namespace (one Redis Cluster hash tag) shared by all nodes",
    )
    routing_heartbeat_seconds: float = Field(
        default=5.0,
        gt=0.0,
        description="how often this node tells routing it is alive",
    )
    routing_node_timeout_seconds: float = Field(
        default=20.0,
        gt=0.0,
        description="a node silent this long is declared lost and its queued calls reclaimed",
    )
    routing_events_max: int = Field(
        default=1_000_000,
        ge=0,
        description=(
            "routing's event stream keeps about this many latest events (0 = unbounded); "
            "the same for every node of the tenant"
        ),
    )
    api_token: str | None = Field(
        default=None,
        min_length=16,
        description=(
            "bearer token required by the /api/ endpoints that change state; unset = only "
            "clients on this host (loopback) may change state"
        ),
    )
    web_secure_cookies: bool = Field(
        default=False,
        description="mark the session cookie Secure (set it when browsers use HTTPS)",
    )
    web_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=168,
        description="how long a desk or wallboard login lasts",
    )
    wallboard_longest_wait_alert: float = Field(
        default=60.0,
        gt=0,
        description="the wallboard alerts when a queue's longest wait exceeds this many seconds",
    )
    wallboard_sl_target: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="the wallboard alerts when a queue's service level today is under this share",
    )
    wallboard_chart_hours: float = Field(
        default=4.0,
        gt=0,
        le=24,
        description=(
            "the wallboard's chart shows this many hours of 15-minute intervals; the surge "
            "alert's baseline is the same span"
        ),
    )
    wallboard_surge_factor: float = Field(
        default=2.0,
        gt=1,
        description=(
            "the wallboard alerts of a surge when a queue's calls offered in the surge window "
            "exceed this multiple of the window's average over the chart's hours before it"
        ),
    )
    wallboard_surge_window_seconds: float = Field(
        default=300.0,
        ge=60,
        le=3600,
        description="the recent window the surge alert counts calls offered in",
    )
    wallboard_surge_min_calls: int = Field(
        default=10,
        ge=1,
        description="no surge alert with fewer calls offered than this in the window",
    )
    desk_wrap_codes: tuple[str, ...] = Field(
        default=("已解决", "已派工", "需回访", "转其他部门", "误拨", "咨询已答复"),
        min_length=1,
        description="the wrap-up codes an agent chooses from on the desk (the first preselected)",
    )
    desk_transfer_queues: tuple[str, ...] = Field(
        default=("fault_repair", "billing", "new_connection", "complaint", "general"),
        description="the queues (skills) an agent may send a caller to from the desk",
    )
    service_province: str = Field(
        default="",
        max_length=32,
        description="the hotline's province (江苏省): fills what a caller leaves out of an address",
    )
    service_city: str = Field(
        default="",
        max_length=32,
        description="the hotline's city (南京市): fills what a caller leaves out of an address",
    )
    service_streets: Path | None = Field(
        default=None,
        description=(
            "CSV file of the service area's streets (province,city,district,street,aliases) "
            "that spoken addresses are checked and corrected against by pinyin; unset = the "
            "sample list shipped in the package (central 济南), used only for addresses in 济南 "
            "or in no city"
        ),
    )
    crm_backend: Literal["embedded", "http"] = Field(
        default="embedded",
        description="where tickets, customers and outages live: the embedded SQLite store or a CRM",
    )
    crm_url: str | None = Field(
        default=None,
        description="base URL of the CRM's REST API (crm_backend = http)",
    )
    crm_auth: Literal["none", "bearer", "hmac"] = Field(
        default="none",
        description="how requests to the CRM are authenticated",
    )
    crm_secret: str | None = Field(
        default=None,
        description="the bearer token or the HMAC key for the CRM (crm_auth bearer or hmac)",
    )
    crm_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        description="how long one request to the CRM may take",
    )
    crm_field_map: Path | None = Field(
        default=None,
        description="TOML file renaming ticket fields for the CRM's API (crm_backend = http)",
    )
    crm_ticket_types: tuple[str, ...] = Field(
        default=(),
        description="work-order types allowed besides the eight 95598 ones",
    )
    crm_node_code: int = Field(
        default=1,
        ge=0,
        le=99,
        description="two digits in every ticket number this node allocates (unique per node)",
    )
    crm_max_attempts: int = Field(
        # At most crm_retry_max_seconds (300 s) apart: 1,000 attempts ride out a CRM that is
        # down for 1.7-3.4 days (decision 0008); a smaller budget dead-letters tickets in an
        # ordinary outage.
        default=1000,
        ge=1,
        description="deliveries of a ticket or survey tried before it goes to the dead-letter list",
    )
    crm_retry_max_seconds: float = Field(
        default=300.0,
        gt=0.0,
        description="longest wait between two delivery attempts (exponential backoff with jitter)",
    )
    twilio_account_sid: str | None = Field(
        default=None,
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Twilio account SID (AC...); with twilio_auth_token and twilio_public_url set, "
        "calls to the account's numbers that Twilio sends here run the flow; unset = off",
    )
    twilio_auth_token: str | None = Field(
        default=None,
        min_length=1,
        description="the account's Auth Token: checks X-Twilio-Signature on every webhook and "
        "stream, and authenticates REST requests when no API key is set",
    )
    twilio_api_key: str | None = Field(
        default=None,
        pattern=r"^SK[0-9a-fA-F]{32}$",
        description="API key SID (SK...) for REST requests (handing callers to agents), with "
        "twilio_api_secret; unset = the Auth Token",
    )
    twilio_api_secret: str | None = Field(
        default=None, min_length=1, description="the secret of twilio_api_key"
    )
    twilio_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="the base URL Twilio reaches this node at (behind a reverse proxy, its public "
        "address): signatures are checked against it and TwiML points Twilio to it",
    )
    twilio_api_base: str = Field(
        default="https://api.twilio.com",
        pattern=r"^https?://[^\s?#]+$",
        description="where REST requests to Twilio go",
    )
    twilio_dial_timeout: int = Field(
        default=20,
        ge=5,
        le=600,
        description="seconds an agent's phone rings before a Twilio caller's handoff fails",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description="on the first SIGTERM/SIGINT, how long in-flight work may take to finish",
    )
    heap_trim_seconds: float = Field(
        default=300.0,
        ge=0.0,
        description="how often the node gives the memory glibc's allocator keeps free back to "
        "the OS (malloc_trim, on a worker thread; logged as `heap trimmed`); 0 = never",
    )

    @model_validator(mode="after")
    def _rtp_range(self) -> Settings:
        lo, hi = self.sip_rtp_port_min, self.sip_rtp_port_max
        if (lo == 0) != (hi == 0) or lo > hi or (lo and hi - lo < 1):
            raise ValueError(
                f"sip_rtp_port_min/max {lo}-{hi}: both 0 (any port), or a range of at least two "
                "ports with min <= max"
            )
        return self

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        # HOTLINE_LOG_LEVEL=INFO is what people type; accept any case.
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit arguments, HOTLINE_* variables, the TOML file.
        # No .env file and no secrets directory: one file, one set of variables, nothing implicit.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_file.get()),
        )

    def resolved_flow_file(self) -> Path:
        """The flow file to load: `flow_file` when set, else the one shipped in the package."""
        if self.flow_file is not None:
            return self.flow_file
        return Path(str(resources.files("ivr").joinpath(SHIPPED_FLOW)))


def load_settings(config_file: Path | None = None) -> Settings:
    """Load the settings: `config_file` (else `$HOTLINE_CONFIG`), overridden by `HOTLINE_*`.

    Raises `SettingsError` with a readable message for a missing or malformed file, an unknown
    key in the file, or a value that fails validation.
    """
    if config_file is None:
        from_env = os.environ.get(CONFIG_ENV, "")
        config_file = Path(from_env) if from_env else None
    if config_file is not None:
        _check_toml(config_file)

    token = _toml_file.set(config_file)
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_explain(exc, config_file)) from None
    finally:
        _toml_file.reset(token)


def _check_toml(path: Path) -> None:
    """Fail clearly on a file that is missing or not TOML (the source would skip or crash)."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SettingsError(f"settings file {path} {what} (given by --config or {CONFIG_ENV})")
    try:
        with path.open("rb") as f:
            tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"settings file {path} cannot be read: {exc}") from None


def _explain(exc: ValidationError, config_file: Path | None) -> str:
    known = ", ".join(sorted(Settings.model_fields))
    lines = ["invalid settings:"]
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown setting in {config_file} (known settings: {known})")
            continue
        field = str(error["loc"][0]) if error["loc"] else loc
        where = f"{ENV_PREFIX}{field.upper()}"
        if config_file is not None:
            where += f" or '{field}' in {config_file}"
        lines.append(f"  {loc}: {error['msg']} (got {error.get('input')!r}; set by {where})")
    return "\n".join(lines)
