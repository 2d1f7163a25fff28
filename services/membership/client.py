"""What the other services ask membership (with their admin key): the events they hear carry
no personal value (events outlive a member's erasure on the bus), so a consumer that keeps one
(the birthday for birthday multipliers, packs and segments; gender and region for segments)
reads it here when MemberJoined (`birthday_given`, `gender_given`, `region_given`) or
ProfileUpdated (`changed_fields`) says it is there."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ProfileFacts:
    """What consumers keep of a member's profile, as consented (0 / "" where not given)."""

    birth_month: int = 0
    birth_day: int = 0
    gender: int = 0  # membership's Gender
    region: str = ""


def profile_facts(membership: Client, shop_id: str, member_id: str) -> ProfileFacts | None:
    """The member's birthday, gender and region as membership keeps them now, in one GetMember;
    None when the member left or is unknown (their personal data is gone). UNAVAILABLE is raised:
    the event is applied again later."""
    try:
        member = membership.GetMember(mpb.GetMemberRequest(shop_id=shop_id, member_id=member_id))
    except NotFound:
        return None
    if member.status != mpb.MEMBER_STATUS_ACTIVE:
        return None
    profile = member.profile
    day = profile.birthday if profile.HasField("birthday") and profile.birthday.month else None
    return ProfileFacts(birth_month=day.month if day else 0, birth_day=day.day if day else 0,
                        gender=int(profile.gender), region=profile.region)


def birthday(membership: Client, shop_id: str, member_id: str) -> tuple[int, int] | None:
    """The member's birth (month, day) as membership keeps it now; None without one, or when the
    member left or is unknown."""
    found = profile_facts(membership, shop_id, member_id)
    if found is None or not found.birth_month:
        return None
    return found.birth_month, found.birth_day
