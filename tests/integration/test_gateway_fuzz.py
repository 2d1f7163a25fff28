"""The gateway's OpenAPI schema, fuzzed on both backends: schemathesis generates requests for
every operation /openapi.json lists, fitting the schema and not, and each is sent signed every
way an operation can meet: as a member, as a buyer who is not one (or with the shop's key where
the operation takes it), with no credentials and with garbage ones, to a shop that has a member
with points and a reward, so that the deep paths run too. No answer may be a 5xx, every answer
must match the schema, and every status must be documented.

Hypothesis drives the generation directly (schemathesis' strategies, its checks), one run per
operation and mode, rather than through schemathesis' pytest plugin, which does not run under
this pytest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.conftest import Authed, ServiceUnderTest, create_shop
from tests.support.builders import join_member
from tests.support.gateway import Storefront
from tests.support.rewards import create_reward, fund, rewards_api

# Requests per backend, shared out among the operations, the generation modes and the ways of
# signing: thousands, within about a minute.
BUDGET = 5000
MIN_EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
AUTH = ("member", "guest", "none", "garbage")


@dataclass(frozen=True)
class Credentials:
    shop_key: str
    member_token: str
    guest_token: str

    def signings(self, security: list[dict[str, Any]]) -> list[dict[str, str]]:
        """The distinct Authorization headers a request of an operation with `security` is sent with."""
        schemes = {name for requirement in security for name in requirement}
        if not schemes:
            return [{}]
        seen: dict[str, dict[str, str]] = {}
        for auth in AUTH:
            if auth == "none":
                headers = {}
            elif auth == "garbage":
                headers = {"authorization": "Bearer x.y.z"}
            else:
                token = self.shop_key if schemes == {"ShopKey"} else (
                    self.member_token if auth == "member" else self.guest_token)
                headers = {"authorization": f"Bearer {token}"}
            seen.setdefault(repr(headers), headers)
        return list(seen.values())


@pytest.fixture(scope="module")
def credentials(storefront: Storefront, membership: ServiceUnderTest, points: ServiceUnderTest,
                rewards: ServiceUnderTest, admin: Authed) -> Credentials:
    shop = create_shop(membership, admin)
    create_reward(rewards_api(rewards, shop), shop.shop_id)
    buyer = "b-fuzz-member"
    fund(points, shop, join_member(shop, buyer), 500)
    return Credentials(shop.key, storefront.token(shop, buyer, follows_shop=True),
                       storefront.token(shop, "b-fuzz-guest", follows_shop=True, completed_trades=3))


def fuzz(operation: Any, mode: GenerationMode, examples: int, send: Callable[[Any], None]) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                         phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        send(case)

    run()


def test_no_input_makes_the_gateway_fail_or_break_its_schema(storefront: Storefront,
                                                              credentials: Credentials) -> None:
    schema = schemathesis.openapi.from_url(storefront.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    signings = {op.label: credentials.signings(op.definition.raw.get("security", [])) for op in operations}
    examples = max(MIN_EXAMPLES, BUDGET // (2 * sum(len(s) for s in signings.values())))
    sent = 0
    failures: list[str] = []

    for operation in operations:
        def send(case: Any, signed: list[dict[str, str]] = signings[operation.label]) -> None:
            nonlocal sent
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            for headers in signed:
                sent += 1
                case.call_and_validate(headers=headers, checks=CHECKS)

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, examples, send)
            except (FailureGroup, AssertionError) as failure:
                failures.append(f"{operation.label} ({mode.value}): {failure}")
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to generate outside the schema (an operation without parameters)
    assert not failures, "\n\n".join(failures)
    assert sent >= 1000, f"only {sent} requests: raise BUDGET"
    print(f"\nfuzz: {sent} requests over {len(operations)} operations")
