"""The Twilio front end: the 95598 flow for calls that reach the hotline through Twilio.

Twilio posts the call to ``/twilio/voice`` (signed), the hotline answers with TwiML that opens a
bidirectional Media Stream to ``/twilio/stream``, and the call then runs on the same dialog and
session driver as a SIP call: :class:`ivr.twilio.call.TwilioCall` is its ``Transport``. A caller
handed to an agent is moved off the stream by a REST update of the live call (``<Dial>``); the
Dial's action callback brings the caller back for the survey, and status callbacks tell routing
when a caller hangs up anywhere.

Protocol code is sans-I/O (`messages`, `playout`, `receiver`); `call` and `front` are the pump.
"""
