"""Transports that carry a call to and from the dialog: simulated (SIP and Twilio follow)."""
