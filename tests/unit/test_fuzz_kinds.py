"""Every hostile kind of the fuzz generator is rejected by the decoder with the reason it declares."""

from __future__ import annotations

import pytest

from simulators.fuzz import KINDS, hostile_messages
from stream.errors import FrameValidationError
from stream.schemas import REJECT_REASONS, decode_frame


def test_there_are_at_least_fifty_kinds_each_with_a_known_reason():
    assert len({k.name for k in KINDS}) == len(KINDS) >= 50
    assert {k.reason for k in KINDS} <= set(REJECT_REASONS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_is_rejected_with_its_reason(kind):
    (msg,) = [m for m in hostile_messages(len(KINDS)) if m[0] == kind.name]
    with pytest.raises(FrameValidationError) as exc:
        decode_frame(msg[2])
    assert exc.value.reason == kind.reason, exc.value.detail
