"""Profile checks (phone, consent, birthday), API keys, page tokens and the phone vault. Pure: no I/O."""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest

from services.kit.auth import ADMIN, KeyRing, Principal, authorize, bearer_token
from services.kit.errors import InvalidArgument, PermissionDenied, Unauthenticated, Violations
from services.kit.paging import decode_token, encode_token
from services.membership.domain import (
    ProfileField,
    ProfileInput,
    mask_phone,
    normalize_phone,
    validate_profile,
)
from services.membership.pii import DataKey, PiiKeys

ADMIN_KEY = "admin_unit_key"
SECRET = b"unit-auth-secret"
ALL_FIELDS = set(ProfileField)


def profile_violations(profile: ProfileInput, consent: set[ProfileField] = ALL_FIELDS) -> list[str]:
    v = Violations()
    validate_profile(profile, consent, v)
    return [field for field, _ in v.items]


def birthday(year: int, month: int, day: int) -> ProfileInput:
    return ProfileInput(birthday=(year, month, day), given={ProfileField.BIRTHDAY})


# --- phones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "13800135678", "+86 138 0013 5678", "8613800135678", "+8613800135678", "138-0013-5678", " 13800135678 ",
])
def test_normalize_phone_accepts_mainland_mobiles_with_or_without_country_code(raw):
    assert normalize_phone(raw) == "13800135678"


@pytest.mark.parametrize("raw", [
    "12345",  # too short
    "23800135678",  # does not start with 1
    "12800135678",  # second digit must be 3-9
    "1380013567x",  # not all digits
    "138001356789",  # 12 digits
    "",
    "+1 13800135678",  # another country code
])
def test_normalize_phone_rejects_malformed_numbers(raw):
    assert normalize_phone(raw) is None


def test_mask_phone_keeps_first_three_and_last_four_digits():
    assert mask_phone("13800135678") == "138****5678"


def test_masked_normalized_phone_hides_the_middle_digits():
    masked = mask_phone(normalize_phone("+86 138 0013 5678") or "")
    assert masked == "138****5678"
    assert "0013" not in masked


# --- profile and consent --------------------------------------------------------------------------


def test_profile_with_every_field_consented_is_valid():
    profile = ProfileInput(name="张三", gender=1, phone="13800135678", birthday=(1990, 5, 17),
                           region="浙江 杭州", given=set(ProfileField))
    assert profile_violations(profile) == []


def test_given_field_without_consent_is_reported_as_profile_dot_field():
    profile = ProfileInput(name="张三", phone="13800135678", given={ProfileField.NAME, ProfileField.PHONE})
    assert profile_violations(profile, consent={ProfileField.NAME}) == ["profile.phone"]


def test_every_unconsented_field_is_reported():
    profile = ProfileInput(gender=2, region="上海", given={ProfileField.GENDER, ProfileField.REGION})
    assert sorted(profile_violations(profile, consent=set())) == ["profile.gender", "profile.region"]


def test_consent_is_checked_under_the_given_prefix():
    v = Violations()
    validate_profile(ProfileInput(name="x", given={ProfileField.NAME}), set(), v, prefix="members[3].profile")
    assert [f for f, _ in v.items] == ["members[3].profile.name"]


def test_consented_fields_that_are_not_given_need_no_values():
    assert profile_violations(ProfileInput(), consent=set()) == []


def test_malformed_phone_is_reported_on_profile_phone():
    profile = ProfileInput(phone="12345", given={ProfileField.PHONE})
    assert profile_violations(profile) == ["profile.phone"]


def test_unknown_gender_is_reported():
    assert profile_violations(ProfileInput(gender=3, given={ProfileField.GENDER})) == ["profile.gender"]


def test_name_over_100_characters_is_reported():
    assert profile_violations(ProfileInput(name="x" * 101, given={ProfileField.NAME})) == ["profile.name"]


def test_29_february_without_a_year_is_a_valid_birthday():
    assert profile_violations(birthday(0, 2, 29)) == []


def test_30_february_is_not_a_calendar_date():
    assert profile_violations(birthday(0, 2, 30)) == ["profile.birthday"]


def test_29_february_in_a_non_leap_year_is_not_a_calendar_date():
    assert profile_violations(birthday(2023, 2, 29)) == ["profile.birthday"]


def test_month_13_is_not_a_calendar_date():
    assert profile_violations(birthday(1990, 13, 1)) == ["profile.birthday"]


def test_birthday_in_a_future_year_is_rejected():
    assert profile_violations(birthday(date.today().year + 1, 1, 1)) == ["profile.birthday"]


def test_birthday_before_1900_is_rejected():
    assert profile_violations(birthday(1899, 12, 31)) == ["profile.birthday"]


def test_birthday_with_a_past_year_is_valid():
    assert profile_violations(birthday(1990, 5, 17)) == []


# --- API keys -------------------------------------------------------------------------------------


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing(ADMIN_KEY, SECRET)


def test_issued_key_authenticates_as_its_shop(keyring):
    key_id, key = keyring.issue("shop-a")
    principal = keyring.authenticate(key)
    assert principal == Principal(shop_id="shop-a", key_id=key_id)
    assert not principal.is_admin


def test_issued_keys_are_distinct(keyring):
    assert keyring.issue("shop-a") != keyring.issue("shop-a")


def test_admin_key_authenticates_as_admin(keyring):
    principal = keyring.authenticate(ADMIN_KEY)
    assert principal is ADMIN
    assert principal.is_admin


def test_key_with_another_shop_substituted_is_unauthenticated(keyring):
    _, key = keyring.issue("shop-a")
    with pytest.raises(Unauthenticated) as exc:
        keyring.authenticate(key.replace("shop-a", "shop-b", 1))
    assert exc.value.reason == "INVALID_CREDENTIALS"


def test_key_with_a_tampered_signature_is_unauthenticated(keyring):
    _, key = keyring.issue("shop-a")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(Unauthenticated):
        keyring.authenticate(tampered)


def test_key_signed_with_another_secret_is_unauthenticated(keyring):
    _, foreign = KeyRing(ADMIN_KEY, b"another-secret").issue("shop-a")
    with pytest.raises(Unauthenticated) as exc:
        keyring.authenticate(foreign)
    assert exc.value.reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize("key", ["nonsense", "lk_shop-a", "lk_shop-a.abc", "lk_a.b.c.d", ADMIN_KEY + "x"])
def test_malformed_key_is_unauthenticated(keyring, key):
    with pytest.raises(Unauthenticated):
        keyring.authenticate(key)


def test_missing_key_is_unauthenticated_with_missing_credentials(keyring):
    with pytest.raises(Unauthenticated) as exc:
        keyring.authenticate("")
    assert exc.value.reason == "MISSING_CREDENTIALS"


def test_shop_key_may_act_on_its_own_shop():
    authorize(Principal(shop_id="shop-a", key_id="k1"), "shop-a", admin_only=False)


def test_shop_key_on_another_shop_is_denied_with_shop_mismatch():
    with pytest.raises(PermissionDenied) as exc:
        authorize(Principal(shop_id="shop-a", key_id="k1"), "shop-b", admin_only=False)
    assert exc.value.reason == "SHOP_MISMATCH"
    assert exc.value.metadata == {"shop_id": "shop-b"}


def test_shop_key_on_an_admin_only_call_is_denied_with_admin_only():
    with pytest.raises(PermissionDenied) as exc:
        authorize(Principal(shop_id="shop-a", key_id="k1"), "shop-a", admin_only=True)
    assert exc.value.reason == "ADMIN_ONLY"


@pytest.mark.parametrize("admin_only", [False, True])
def test_admin_may_act_on_any_shop(admin_only):
    authorize(ADMIN, "shop-z", admin_only=admin_only)


@pytest.mark.parametrize(("metadata", "token"), [
    ((("authorization", "Bearer abc123"),), "abc123"),
    ((("authorization", "bearer  abc123 "),), "abc123"),
    ((("authorization", "abc123"),), "abc123"),
    ((("x-api-key", " abc123 "),), "abc123"),
    ((("user-agent", "grpc"), ("authorization", "Bearer abc123")), "abc123"),
    ((("authorization", b"Bearer abc123"),), ""),
    ((("authorization", "Bearer"),), ""),
    ((), ""),
    (None, ""),
])
def test_bearer_token_parsing(metadata, token):
    assert bearer_token(metadata) == token


def test_bearer_token_roundtrips_through_authenticate(keyring):
    _, key = keyring.issue("shop-a")
    assert keyring.authenticate(bearer_token((("authorization", f"Bearer {key}"),))).shop_id == "shop-a"


# --- page tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("after", "item"), [(["m_123"], str), ([42], int), (["2024-01-01T00:00:00Z", "m_1"], str)])
def test_page_token_round_trips(after: list, item: type) -> None:
    assert decode_token("members", "shop-1", encode_token("members", "shop-1", after), item, len(after)) == after


@pytest.mark.parametrize("after", [[-3], [1, 1], [2**63]])
def test_page_tokens_with_negative_extra_or_huge_positions_are_invalid(after: list) -> None:
    with pytest.raises(InvalidArgument):
        decode_token("ledger", "shop-1", encode_token("ledger", "shop-1", after), int)


def test_empty_page_token_means_the_first_page():
    assert decode_token("members", "shop-1", "") is None


def test_page_token_is_url_safe_without_padding():
    token = encode_token("members", "shop-1", ["会员?/+"])
    assert "=" not in token and "+" not in token and "/" not in token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "garbage!!",
    "%%%",
    _b64(b"\xff\xfe not utf-8"),
    _b64(b"not json"),
    _b64(json.dumps([1, 2]).encode()),
    _b64(json.dumps("text").encode()),
    _b64(json.dumps({"k": "members"}).encode()),
    _b64(json.dumps({"k": "members", "a": "m_1"}).encode()),
])
def test_garbage_page_token_is_invalid_argument_on_page_token(token):
    with pytest.raises(InvalidArgument) as exc:
        decode_token("members", "shop-1", token)
    assert [field for field, _ in exc.value.violations] == ["page_token"]


def test_token_from_another_shop_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as exc:
        decode_token("members", "shop-2", encode_token("members", "shop-1", ["m_1"]))
    assert [field for field, _ in exc.value.violations] == ["page_token"]


def test_token_from_another_list_is_invalid_argument():
    with pytest.raises(InvalidArgument) as exc:
        decode_token("members", "shop-1", encode_token("tier_history", "shop-1", [7]))
    assert [field for field, _ in exc.value.violations] == ["page_token"]


# --- personal data at rest (pii.py) ----------------------------------------------------------------


@pytest.fixture
def pii() -> PiiKeys:
    return PiiKeys(b"k" * 32)


@pytest.fixture
def key(pii: PiiKeys) -> DataKey:
    return pii.new_key("shop-a", "k_1")[0]


def test_sealed_phone_opens_in_the_same_place(key):
    sealed = key.seal("13800135678", "shop-a/members/m1/phone")
    assert key.open(sealed, "shop-a/members/m1/phone") == "13800135678"


def test_sealed_phone_does_not_contain_the_digits(key):
    sealed = key.seal("13800135678", "shop-a/members/m1/phone")
    assert b"13800135678" not in sealed
    assert "13800135678".encode("utf-16-le") not in sealed


def test_sealing_twice_gives_different_ciphertexts(key):
    assert key.seal("13800135678", "c") != key.seal("13800135678", "c")


@pytest.mark.parametrize("elsewhere", ["shop-a/members/m2/phone", "shop-b/members/m1/phone",
                                       "shop-a/members/m1/name"])
def test_sealed_value_does_not_open_in_another_place(key, elsewhere):
    sealed = key.seal("13800135678", "shop-a/members/m1/phone")
    assert key.open(sealed, elsewhere) is None


def test_sealed_value_does_not_open_with_another_buyers_key(pii, key):
    other = pii.new_key("shop-a", "k_2")[0]
    assert other.open(key.seal("13800135678", "c"), "c") is None


@pytest.mark.parametrize("sealed", [b"", b"short", b"\x00" * 40, None])
def test_truncated_or_garbage_ciphertext_opens_to_none(key, sealed):
    assert key.open(sealed, "c") is None


def test_a_wrapped_data_key_unwraps_only_with_the_pii_key_and_where_it_was_made(pii):
    key, wrapped = pii.new_key("shop-a", "k_1")
    sealed = key.seal("李雷", "c")
    assert pii.unwrap("shop-a", "k_1", wrapped).open(sealed, "c") == "李雷"
    assert PiiKeys(b"j" * 32).unwrap("shop-a", "k_1", wrapped) is None
    assert pii.unwrap("shop-b", "k_1", wrapped) is None
    assert pii.unwrap("shop-a", "k_2", wrapped) is None
    assert pii.unwrap("shop-a", "k_1", None) is None  # destroyed


def test_buyer_hash_is_stable_keyed_and_per_shop(pii):
    digest = pii.buyer_hash("shop-a", "buyer-42")
    assert digest == pii.buyer_hash("shop-a", "buyer-42") and len(digest) == 64
    assert "buyer-42" not in digest
    assert pii.buyer_hash("shop-b", "buyer-42") != digest
    assert PiiKeys(b"j" * 32).buyer_hash("shop-a", "buyer-42") != digest


def test_phone_digits_from_other_scripts_are_refused() -> None:
    assert normalize_phone("13٨٠٠١٣٥٦٧٨") is None


@pytest.mark.parametrize("after", [["x"], [None], [True], [1.5], []])
def test_page_tokens_holding_the_wrong_kind_of_position_are_invalid(after: list) -> None:
    token = encode_token("tier_history", "shop-1", after)
    with pytest.raises(InvalidArgument):
        decode_token("tier_history", "shop-1", token, int)


def test_deeply_nested_page_tokens_are_invalid_not_internal() -> None:
    token = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    with pytest.raises(InvalidArgument):
        decode_token("members", "shop-1", token)
