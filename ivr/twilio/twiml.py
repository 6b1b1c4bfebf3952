"""The TwiML the hotline answers Twilio with, built by the twilio library (never by hand).

- :func:`connect_stream`: ``<Connect><Stream>`` opens a *bidirectional* Media Stream to our
  WebSocket; the ``<Stream>`` URL takes no query string (Twilio's ``<Stream>`` page), so the
  call's context travels as ``<Parameter>``\\ s and comes back in ``start.customParameters``.
  Twilio runs the TwiML after ``<Connect>`` only once our server closes the socket (Twilio's
  error page 31921), so the IVR hangs up by closing it, and the ``<Hangup/>`` that follows
  says so: no REST request is needed to end a call.
- :func:`dial_agent`: ``<Dial>`` the agent's SIP address, Twilio Client identity or number,
  with an ``action`` (the caller comes back to us when the agent leg ends) and status callbacks
  on the agent leg.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from ivr.twilio.config import DIAL_PATH, STATUS_PATH, TwilioConfig

AGENT_LEG_EVENTS = "initiated ringing answered completed"
"""Status callbacks asked for on the agent leg (``statusCallbackEvent``)."""


class UnreachableContactError(ValueError):
    """An agent contact Twilio cannot dial (not sip:, sips:, client: or a number)."""


def connect_stream(config: TwilioConfig, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream url=wss://…/twilio/stream>`` with the call's context as parameters,
    then ``<Hangup/>`` for when the IVR closes the stream."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=config.stream_url, name="hotline95598")
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def dial_agent(config: TwilioConfig, agent_id: str, contact: str) -> str:
    """``<Dial action=…/twilio/dial>`` to the agent, status callbacks on the agent's leg.

    The contact routing knows for the agent decides the noun: ``sip:``/``sips:`` → ``<Sip>``,
    ``client:NAME`` → ``<Client>NAME``, ``tel:+86…`` or ``+86…`` → ``<Number>``; no contact at
    all → ``<Client>`` with the agent id (a browser softphone registered under that identity).
    """
    dial = Dial(
        action=config.url(DIAL_PATH),
        method="POST",
        timeout=config.dial_timeout,
    )
    callbacks = {
        "status_callback": config.url(STATUS_PATH),
        "status_callback_method": "POST",
        "status_callback_event": AGENT_LEG_EVENTS,
    }
    target = contact.strip()
    if target.startswith(("sip:", "sips:")):
        dial.sip(target, **callbacks)
    elif target.startswith("client:") or not target:
        identity = target.removeprefix("client:") or agent_id
        if not identity:
            raise UnreachableContactError("no client identity")
        dial.client(identity, **callbacks)
    elif target.startswith("tel:") or target.startswith("+"):
        number = target.removeprefix("tel:")
        if not number.lstrip("+").isdigit():
            raise UnreachableContactError(f"not a phone number: {number!r}")
        dial.number(number, **callbacks)
    else:
        raise UnreachableContactError(f"Twilio cannot dial {target!r}")
    response = VoiceResponse()
    response.append(dial)
    return str(response)


def hangup() -> str:
    """``<Hangup/>``: end the call (a caller Twilio returns to us after we let go)."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def reject() -> str:
    """``<Reject reason="busy"/>``: refuse a new call (draining) without answering it."""
    response = VoiceResponse()
    response.reject(reason="busy")
    return str(response)


def empty() -> str:
    """``<Response/>``: nothing to do (Twilio ignores TwiML for a call that has ended)."""
    return str(VoiceResponse())
