"""Stored answers of idempotent calls that show a person (members, orders). The kit keeps the
answer to each request_id; these are sealed with the buyer's data key before it does, so that
destroying the key when the member leaves makes every stored copy unreadable as well."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue

from services.kit import reasons as kit_reasons
from services.kit.errors import FailedPrecondition

if TYPE_CHECKING:
    from services.membership.context import Membership

R = TypeVar("R", bound=Message)
_SEPARATOR = b":"  # key ids are "k_" and hex digits


def _context(shop_id: str, method: str) -> str:
    return f"{shop_id}/answers/{method}"


def seal(ctx: Membership, shop_id: str, key_id: str, method: str, answer: Message) -> BytesValue:
    """The answer as the kit stores it: "<key id>:<sealed answer>", or ":<answer>" when it shows
    nobody (an order whose buyer left)."""
    plain = answer.SerializeToString()
    key = ctx.keys.key(shop_id, key_id) if key_id else None
    if key is None:
        return BytesValue(value=_SEPARATOR + plain)
    return BytesValue(value=key_id.encode() + _SEPARATOR + key.seal_bytes(plain, _context(shop_id, method)))


def subject(stored: BytesValue) -> str:
    """Whom a stored answer is about: the data key it is sealed with (see erase_responses)."""
    return stored.value.partition(_SEPARATOR)[0].decode()


def open_answer(ctx: Membership, shop_id: str, method: str, stored: BytesValue, answer_type: type[R]) -> R:
    """A stored answer again, for a retry; refused like a reused request_id once the key is gone."""
    key_id, _, payload = stored.value.partition(_SEPARATOR)
    if not key_id:
        return answer_type.FromString(payload)
    key = ctx.keys.key(shop_id, key_id.decode())
    plain = key.open_bytes(payload, _context(shop_id, method)) if key is not None else None
    if plain is None:
        raise FailedPrecondition("the answer to this request was erased with the member's personal data; use a "
                                 "new request_id", reason=kit_reasons.REQUEST_ANSWER_ERASED,
                                 subject=f"request/{method}")
    return answer_type.FromString(plain)
