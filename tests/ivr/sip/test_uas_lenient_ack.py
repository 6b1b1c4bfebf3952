"""An ACK with a made-up To-tag (pyVoIP 1.6.8) still confirms the one call it can only mean."""

from __future__ import annotations

import re

from ivr.sip.events import CallAcked


def test_ack_with_a_wrong_to_tag_confirms_the_call(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    caller.learn([ok])
    ack = caller.ack()
    wrong = re.sub(rb"(\r\nTo: [^\r\n]*;tag=)[^;\r\n]+", rb"\1madeup123", ack)
    assert wrong != ack
    assert uas.feed(wrong) == []  # an ACK is never answered
    assert uas.take(CallAcked) == [CallAcked(call.call_key)]
    assert [s for s in uas.at(10.0) if s.data == ok.data] == []  # the 200 is no longer resent


def test_ack_with_a_wrong_to_tag_and_the_wrong_from_tag_is_dropped(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    caller.learn([ok])
    ack = caller.ack()
    wrong = re.sub(rb"(\r\nTo: [^\r\n]*;tag=)[^;\r\n]+", rb"\1madeup123", ack)
    wrong = re.sub(rb"(\r\nFrom: [^\r\n]*;tag=)[^;\r\n]+", rb"\1stranger", wrong)
    assert uas.feed(wrong) == []
    assert uas.take(CallAcked) == []
