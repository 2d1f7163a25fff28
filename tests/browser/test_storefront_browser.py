"""The storefront member card in a real headless Chromium, on a demo storefront page (as `make run`
serves it) for a shop set up like the demo: a member and a non-member see their own cards, the
non-member joins from the page, the custom mode shows the operator's text, and the shop's own
CSS cannot break the card. Screenshots of each state go under the test output folder."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect

from gateway.app import DemoStorefront
from gateway.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop
from tests.integration.test_gateway_card import GIFT, balance, member_who_spent, with_join_gift
from tests.integration.test_membership_storefront import configure, custom
from tests.support.browser import screenshot_dir
from tests.support.gateway import TOKEN_KEY, gateway_settings, start_gateway
from tests.support.services import Backend

MEMBER, GUEST = "buyer-member", "buyer-guest"
SLOW = 30_000  # ms: what the services do after a join (the points account) happens after the answer


@dataclass
class DemoShop:
    shop: Shop
    url: str
    member_id: str


@contextmanager
def open_demo(membership: ServiceUnderTest, admin: Authed, backend: Backend, suite: dict[str, ServiceUnderTest],
              folder: Path, *, join_gift: bool = True) -> Iterator[DemoShop]:
    shop = create_shop(membership, admin)
    if join_gift:
        with_join_gift(shop)
    member_id = member_who_spent(shop, MEMBER, 1_500)
    running = start_gateway(gateway_settings(backend, suite, folder), DemoStorefront(shop.shop_id, MEMBER, GUEST))
    try:
        yield DemoShop(shop, running.url, member_id)
    finally:
        running.stop()


@pytest.fixture
def demo(membership: ServiceUnderTest, admin: Authed, backend: Backend, suite: dict[str, ServiceUnderTest],
         tmp_path: Path) -> Iterator[DemoShop]:
    """A shop like the demo one (a join gift, a silver member) and its demo storefront page."""
    with open_demo(membership, admin, backend, suite, tmp_path) as opened:
        yield opened


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 900}, device_scale_factor=1)
    try:
        yield context.new_page()
    finally:
        context.close()


def member_view(page: Page) -> Locator:
    return page.locator("[data-testid=viewer-member]")


def guest_view(page: Page) -> Locator:
    return page.locator("[data-testid=viewer-guest]")


def shoot(locator: Locator, state: str, backend: Backend) -> None:
    locator.screenshot(path=str(screenshot_dir() / f"card-{state}-{backend.name}.png"))


def test_the_non_member_joins_from_the_page_and_then_sees_tier_and_points(
        demo: DemoShop, page: Page, points: ServiceUnderTest, backend: Backend) -> None:
    opened = page.goto(demo.url + "/")
    assert opened is not None and opened.headers["cache-control"] == "no-store"  # the page carries tokens
    member, guest = member_view(page), guest_view(page)
    expect(member.locator("[data-testid=card-tier]")).to_have_text("银卡会员")
    expect(member.locator("[data-testid=card-progress]")).to_contain_text("金卡会员")
    expect(member.locator("[data-testid=card-points]")).to_have_text(
        re.compile(r"^[0-9]+$"), timeout=SLOW)
    shown = int(member.locator("[data-testid=card-points]").inner_text())
    assert shown == balance(points, demo.shop, demo.member_id)
    shoot(member.locator("loyalty-member-card"), "member", backend)
    centre = member.locator("[data-testid=card-centre-link]").get_attribute("href") or ""
    assert centre.startswith(f"{demo.url}/centre?shop_id={demo.shop.shop_id}&lang=zh#token=")

    expect(guest.locator("[data-testid=card-gift]")).to_have_text(GIFT)
    expect(guest.locator("[data-testid=card-join-button]")).to_have_text("立即入会")
    shoot(guest.locator("loyalty-member-card"), "join-smart", backend)
    page.screenshot(path=str(screenshot_dir() / f"storefront-page-{backend.name}.png"), full_page=True)
    guest.locator("[data-testid=card-join-button]").click()
    expect(guest.locator("[data-testid=card-tier]")).to_have_text("普通会员")
    expect(guest.locator("[data-testid=card-points]")).to_be_visible()
    # Reloaded, the page shows the buyer as the member they now are, points and all.
    page.reload()
    expect(guest.locator("[data-testid=card-tier]")).to_have_text("普通会员")
    expect(guest.locator("[data-testid=card-points]")).to_have_text(re.compile(r"^[0-9]+$"))
    expect(guest.locator("[data-testid=card-join-button]")).to_have_count(0)


def test_custom_mode_shows_the_operators_call_to_action_over_the_image(
        demo: DemoShop, page: Page, backend: Backend) -> None:
    configure(demo.shop, "storefront_card", storefront_card=custom(
        "入会立领20元券", url=f"{demo.url}/static/card-background.svg"))
    page.goto(demo.url + "/")
    guest = guest_view(page)
    expect(guest.locator("[data-testid=card-cta]")).to_have_text("入会立领20元券")
    expect(guest.locator("[data-testid=card-background]")).to_have_attribute(
        "src", f"{demo.url}/static/card-background.svg")
    expect(guest.locator("[data-testid=card-gift]")).to_have_count(0)
    # Members still see tier and points in custom mode.
    expect(member_view(page).locator("[data-testid=card-tier]")).to_have_text("银卡会员")
    page.wait_for_function("() => [...document.querySelectorAll('loyalty-member-card')].every("
                           "h => !h.shadowRoot.querySelector('img') || h.shadowRoot.querySelector('img').complete)")
    shoot(guest.locator("loyalty-member-card"), "join-custom", backend)
    guest.locator("[data-testid=card-cta]").click()
    expect(guest.locator("[data-testid=card-tier]")).to_have_text("普通会员")


def test_a_token_for_another_buyer_shows_nothing_of_the_first(demo: DemoShop, page: Page) -> None:
    page.goto(demo.url + "/?lang=en")
    member, guest = member_view(page), guest_view(page)
    expect(member.locator("[data-testid=card-tier]")).to_have_text("银卡会员")
    expect(guest.locator("[data-testid=card-join-button]")).to_have_text("Join now")
    expect(guest.locator("[data-testid=card-tier]")).to_have_count(0)
    expect(guest.locator("[data-testid=card-points]")).to_have_count(0)
    expect(guest.locator("loyalty-member-card")).not_to_contain_text("银卡会员")
    expect(member.locator("loyalty-member-card")).to_contain_text("Points")


def test_a_shop_without_a_join_gift_shows_the_non_member_nothing(
        membership: ServiceUnderTest, admin: Authed, backend: Backend, suite: dict[str, ServiceUnderTest],
        tmp_path: Path, page: Page) -> None:
    with open_demo(membership, admin, backend, suite, tmp_path, join_gift=False) as shop:
        page.goto(shop.url + "/")
        guest = guest_view(page)
        expect(member_view(page).locator("[data-testid=card-tier]")).to_have_text("银卡会员")
        expect(guest.locator("loyalty-member-card")).to_have_attribute("data-state", "none")
        expect(guest.locator("loyalty-member-card")).to_be_hidden()
        expect(guest.locator("[data-testid=card-error]")).to_have_count(0)
        guest.screenshot(path=str(screenshot_dir() / f"card-none-{backend.name}.png"))


def test_the_shops_hostile_css_does_not_break_the_card(demo: DemoShop, page: Page, backend: Backend) -> None:
    page.goto(demo.url + "/")
    guest = guest_view(page)
    expect(guest.locator("[data-testid=card-join-button]")).to_be_visible()
    # The card's styles stay inside it: a page element with the card's class names is untouched.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<span id=probe class=\"card tier badge\">x</span>')")
    assert page.eval_on_selector("#probe", "e => getComputedStyle(e).fontSize") == "15px"
    page.add_style_tag(content="""
        * { color: red !important; font-size: 0 !important; line-height: 0 !important;
            letter-spacing: 40px !important; font-family: monospace !important; }
        div, span, button, a, b, i, img, p, loyalty-member-card { display: none !important; }
        section { font-size: 0 !important; visibility: visible !important; }
    """)
    button = guest.locator("[data-testid=card-join-button]")
    expect(button).to_be_visible()
    expect(guest.locator("[data-testid=card-gift]")).to_have_text(GIFT)
    assert button.evaluate("e => getComputedStyle(e).fontSize") == "14px"
    assert button.evaluate("e => getComputedStyle(e).color") == "rgb(255, 255, 255)"
    assert (button.bounding_box() or {"height": 0})["height"] >= 24
    tier = member_view(page).locator("[data-testid=card-tier]")
    expect(tier).to_be_visible()
    assert tier.evaluate("e => getComputedStyle(e).fontSize") == "18px"
    shoot(guest.locator("loyalty-member-card"), "join-smart-hostile-css", backend)
    button.click()
    expect(guest.locator("[data-testid=card-tier]")).to_have_text("普通会员")


def test_the_card_keeps_its_look_under_the_shops_strict_content_security_policy(demo: DemoShop, page: Page) -> None:
    def strict(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, headers={**answer.headers, "content-security-policy":
                                                "default-src 'self'; style-src 'self'; img-src 'self'"})

    page.route(demo.url + "/", strict)
    page.goto(demo.url + "/")
    button = guest_view(page).locator("[data-testid=card-join-button]")
    expect(button).to_be_visible()
    assert button.evaluate("e => getComputedStyle(e).color") == "rgb(255, 255, 255)"
    bar = member_view(page).locator("[role=progressbar] i")
    assert bar.evaluate("e => e.getBoundingClientRect().width") > 0


def test_a_refused_token_shows_an_error_in_the_card_not_a_blank(demo: DemoShop, page: Page, backend: Backend) -> None:
    def garbled(route: Route) -> None:  # and no data-token-url: the page cannot get a fresh one
        answer = route.fetch()
        body = re.sub(r'data-token="[^"]+"', 'data-token="not-a-token"', answer.text())
        body = re.sub(r' data-token-url="[^"]+"', "", body)
        route.fulfill(response=answer, body=body)

    page.route(demo.url + "/", garbled)
    page.goto(demo.url + "/")
    guest = guest_view(page)
    expect(guest.locator("[data-testid=card-error-message]")).to_have_text("登录状态已失效，请刷新页面")
    expect(guest.locator("loyalty-member-card")).to_have_attribute("data-state", "error")
    shoot(guest.locator("loyalty-member-card"), "error", backend)


def test_an_expired_token_is_replaced_from_the_shops_token_url_and_the_card_shows(demo: DemoShop,
                                                                                  page: Page) -> None:
    """The page stayed open past the token's minutes: the widget asks the shop's own site
    (data-token-url) for a fresh token once, and the member sees their card, not an error."""
    now = int(time.time())
    expired = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": MEMBER, "shop": demo.shop.shop_id,
                          "iat": now - 1000, "exp": now - 100}, TOKEN_KEY, algorithm=ALGORITHM)
    asked: list[str] = []

    def stale(route: Route) -> None:
        answer = route.fetch()
        body = re.sub(r'data-token="[^"]+"', f'data-token="{expired}"', answer.text(), count=1)
        route.fulfill(response=answer, body=body)

    page.route(demo.url + "/", stale)
    page.on("request", lambda request: asked.append(request.url) if "/demo/buyer-token" in request.url else None)
    page.goto(demo.url + "/")
    expect(member_view(page).locator("[data-testid=card-member]")).to_be_visible(timeout=SLOW)
    expect(member_view(page).locator("loyalty-member-card")).to_have_attribute("data-state", "member")
    assert len(asked) == 1 and MEMBER in asked[0]
