"""The member centre page (/centre) in a real headless Chromium, over a real gateway in front of
the real services, on both backends: a member with points sees the ledger and their balance; a
redeem from the page lowers the balance shown, and a draw shows its prize; another buyer's token
shows nothing of the first; the ledger pages; a non-member joins from the page, signs in once a
day and leaves only after confirming; errors show in the page. Screenshots go under
screenshot_dir()."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Authed, Backend, ServiceUnderTest, Shop
from tests.support.browser import screenshot_dir
from tests.support.gateway import Storefront
from tests.support.lottery import NOTHING, create_lottery, points_prize
from tests.support.rewards import create_reward, fund, rewards_api, wait_until_known

TIMEOUT_MS = 30_000


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 480, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def centre_url(storefront: Storefront, shop: Shop, token: str, lang: str = "") -> str:
    return f"{storefront.url}/centre?shop_id={shop.shop_id}{'&lang=' + lang if lang else ''}#token={token}"


def new_member(storefront: Storefront, shop: Shop, api: Authed, points: ServiceUnderTest, name: str,
               funded: int) -> tuple[str, str]:
    """A buyer who joined through the gateway with `funded` points more: (buyer id, token)."""
    buyer_id = "b-" + uuid.uuid4().hex[:10]
    token = storefront.token(shop, buyer_id, follows_shop=True)
    with httpx.Client(base_url=storefront.url, headers={"authorization": f"Bearer {token}"}) as http:
        joined = http.post("/v1/me/join", json={"consent": ["name", "phone"], "name": name, "phone": "13812345678"},
                           headers={"Idempotency-Key": uuid.uuid4().hex})
    assert joined.status_code == 201, joined.text
    member_id = joined.json()["member_id"]
    wait_until_known(api, shop.shop_id, member_id)
    fund(points, shop, member_id, funded)
    return buyer_id, token


def balance_shown(page: Page) -> int:
    return int(re.sub(r"\D", "", page.get_by_test_id("points-balance").inner_text()))


def test_a_member_sees_the_ledger_and_a_redeem_from_the_page_lowers_the_balance(
    page: Page, storefront: Storefront, shop: Shop, rewards: ServiceUnderTest, points: ServiceUnderTest,
    backend: Backend
) -> None:
    api = rewards_api(rewards, shop)
    reward = create_reward(api, shop.shop_id, name="满99减10 优惠券", points_price=100, stock=10)
    create_reward(api, shop.shop_id, name="金卡专享", points_price=10, stock=5, min_tier_level=2)
    create_lottery(api, shop.shop_id, [points_prize(50), NOTHING], cost_points=30)
    _, token = new_member(storefront, shop, api, points, "小红", funded=300)

    page.goto(centre_url(storefront, shop, token))

    expect(page.get_by_test_id("ledger-entry").first).to_be_visible()
    expect(page.get_by_test_id("profile-phone")).to_have_text("138****5678")
    expect(page.get_by_test_id("ledger-amount").first).to_have_text("+300")
    assert "#token" not in page.url  # the token left the address bar
    before = balance_shown(page)
    assert before >= 300
    gold = page.locator('[data-testid="reward-item"]:has-text("金卡专享")')
    expect(gold.get_by_test_id("reward-why-not")).to_contain_text("会员等级不足")
    expect(gold.get_by_test_id("redeem-button")).to_be_disabled()
    page.screenshot(path=str(screenshot_dir() / f"centre-member-{backend.name}.png"), full_page=True)

    page.locator(f'[data-testid="reward-item"][data-reward-id="{reward.reward_id}"]').get_by_test_id(
        "redeem-button").click()

    expect(page.get_by_test_id("points-balance")).to_have_text(f"{before - 100} 积分")
    expect(page.get_by_test_id("centre-status")).to_contain_text("兑换成功")
    expect(page.get_by_test_id("ledger-amount").first).to_have_text("-100")
    expect(page.get_by_test_id("coupon-item")).to_have_count(1)
    expect(page.get_by_test_id("centre-error")).to_be_hidden()
    page.screenshot(path=str(screenshot_dir() / f"centre-after-redeem-{backend.name}.png"), full_page=True)

    page.get_by_test_id("lottery-draw-button").click()
    expect(page.get_by_test_id("lottery-result")).to_have_text("抽中：50积分")


def test_another_buyers_token_shows_nothing_of_the_first_and_the_ledger_pages(
    page: Page, storefront: Storefront, shop: Shop, rewards: ServiceUnderTest, points: ServiceUnderTest
) -> None:
    api = rewards_api(rewards, shop)
    create_reward(api, shop.shop_id, points_price=100, stock=10)
    new_member(storefront, shop, api, points, "第一位", funded=777)
    buyer_id, second = new_member(storefront, shop, api, points, "第二位", funded=1)
    with storefront.as_buyer(shop, buyer_id) as http:
        member_id = http.get("/v1/me").json()["member_id"]
    for amount in range(2, 13):
        fund(points, shop, member_id, amount)

    page.goto(centre_url(storefront, shop, second, lang="en"))

    expect(page.get_by_test_id("profile-name")).to_have_text("第二位")
    expect(page.get_by_test_id("ledger-amount").first).to_have_text("+12")
    expect(page.get_by_test_id("sign-in-button")).to_have_text("Sign in")
    content = page.content()
    assert "第一位" not in content and "+777" not in content
    # 积分明细 pages by ten: "More" brings the rest (eleven more earnings and the join's points).
    expect(page.get_by_test_id("ledger-entry")).to_have_count(10)
    page.get_by_test_id("ledger-more").click()
    expect(page.get_by_test_id("ledger-entry")).to_have_count(13)
    expect(page.get_by_test_id("ledger-more")).to_be_hidden()


def test_a_non_member_joins_from_the_page_signs_in_once_and_leaves_after_confirming(
    page: Page, storefront: Storefront, shop: Shop, backend: Backend
) -> None:
    token = storefront.token(shop, "b-" + uuid.uuid4().hex[:10], follows_shop=True)

    page.goto(centre_url(storefront, shop, token))
    expect(page.get_by_test_id("join-section")).to_be_visible()
    page.get_by_test_id("join-consent-name").check()
    page.get_by_test_id("join-name").fill("新会员")
    page.get_by_test_id("join-button").click()

    expect(page.get_by_test_id("profile-name")).to_have_text("新会员")
    expect(page.get_by_test_id("join-section")).to_be_hidden()
    page.get_by_test_id("sign-in-button").click()
    result = page.get_by_test_id("sign-in-result")
    expect(result).to_contain_text("签到成功")
    page.get_by_test_id("sign-in-button").click()
    expect(result).to_have_text("今日已签到，明天再来")
    page.screenshot(path=str(screenshot_dir() / f"centre-joined-{backend.name}.png"), full_page=True)

    page.get_by_test_id("leave-button").click()
    expect(page.get_by_test_id("leave-confirm")).to_be_visible()  # nothing is done before the confirmation
    page.get_by_test_id("leave-cancel-button").click()
    expect(page.get_by_test_id("leave-confirm")).to_be_hidden()
    page.get_by_test_id("leave-button").click()
    page.get_by_test_id("leave-reason").fill("不再需要")
    page.get_by_test_id("leave-confirm-button").click()
    expect(page.get_by_test_id("centre-status")).to_have_text("您已退出会员")
    expect(page.get_by_test_id("member-sections")).to_be_hidden()
    page.reload()
    expect(page.get_by_test_id("join-section")).to_be_visible()  # a non-member again (the token is kept in the tab)


def test_a_bad_token_or_none_shows_an_error_in_the_page(page: Page, storefront: Storefront, shop: Shop) -> None:
    page.goto(f"{storefront.url}/centre?shop_id={shop.shop_id}#token=not-a-token")
    expect(page.get_by_test_id("centre-error")).to_have_text("买家凭证无效")
    page.goto(f"{storefront.url}/centre?shop_id=another-shop")
    expect(page.get_by_test_id("centre-error")).to_contain_text("缺少买家凭证")
