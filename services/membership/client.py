"""What the other services ask membership (with their admin key): the events they hear carry
no personal value (events outlive a member's erasure on the bus), so a consumer that keeps one —
the birthday, for birthday multipliers, packs and segments — reads it here when MemberJoined
(`birthday_given`) or ProfileUpdated (`changed_fields`) says it is there."""

from __future__ import annotations

from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc

from services.kit.client import ServiceClient
from services.kit.config import Settings
from services.kit.errors import NotFound

Client = ServiceClient[mgrpc.MembershipServiceStub]


def client(settings: Settings, addresses: dict[str, str] | None = None) -> Client:
    """Membership at `addresses["membership"]`, else where the settings say (LOYALTY_MEMBERSHIP_ADDR)."""
    address = (addresses or {}).get("membership") or settings.address("membership")
    return ServiceClient(mgrpc.MembershipServiceStub, address, key=settings.admin_key,
                         timeout=settings.call_timeout_seconds)


def birthday(membership: Client, shop_id: str, member_id: str) -> tuple[int, int] | None:
    """The member's birth (month, day) as membership keeps it now; None without one, or when the
    member left or is unknown (their personal data is gone). UNAVAILABLE is raised: the event is
    applied again later."""
    try:
        member = membership.GetMember(mpb.GetMemberRequest(shop_id=shop_id, member_id=member_id))
    except NotFound:
        return None
    day = member.profile.birthday
    if member.status != mpb.MEMBER_STATUS_ACTIVE or not (member.profile.HasField("birthday") and day.month):
        return None
    return day.month, day.day
