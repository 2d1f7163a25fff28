"""The pages and the script the gateway serves: /widget.js (the member card a shop embeds) and,
in the embedded default (`make run`), the demo storefront at / with the card shown to a demo
member and a demo non-member."""

from __future__ import annotations

import gzip
import hashlib
import html
import secrets
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gateway.problems import Problem
from gateway.tokens import Buyer

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "static"
# Shops embed the script by URL: a new version reaches their pages within minutes, and a
# revalidation costs a 304.
SCRIPT_CACHE = "public, max-age=300, stale-while-revalidate=3600"


@dataclass(frozen=True)
class Asset:
    """A static file, read once, with its validator and its gzipped form."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str

    @classmethod
    def read(cls, name: str, media_type: str) -> Asset:
        body = (STATIC / name).read_bytes()
        return cls(body, gzip.compress(body, mtime=0), media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    def response(self, request: Request, cache_control: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(self.gzipped, media_type=self.media_type, headers=headers | {"Content-Encoding": "gzip"})
        return Response(self.body, media_type=self.media_type, headers=headers)


WIDGET = Asset.read("widget.js", "text/javascript; charset=utf-8")
# A 702x110 background for the custom mode (自定义设定) of the demo and the tests.
CARD_BACKGROUND = Asset.read("card-background.svg", "image/svg+xml")
STOREFRONT = Template((STATIC / "storefront.html").read_text(encoding="utf-8"))


@router.get("/widget.js")
async def widget(request: Request) -> Response:
    return WIDGET.response(request, SCRIPT_CACHE)


@router.get("/static/card-background.svg")
async def card_background(request: Request) -> Response:
    return CARD_BACKGROUND.response(request, "public, max-age=86400")


WORDS = {
    "zh": {"html_lang": "zh-CN", "title": "Demo Shop 旗舰店 · 首页", "shop_name": "Demo Shop 旗舰店",
           "nav_home": "首页", "nav_new": "新品", "nav_all": "全部宝贝", "other_lang": "English",
           "banner": "双十二 · 会员专享价", "as_member": "会员看到的：", "as_guest": "新访客看到的：",
           "new_visitor": "换一位新访客", "item_1": "保湿面霜 50ml", "item_2": "洁面乳 120g", "item_3": "精华液 30ml",
           "footer": "演示店铺：会员模块由 widget.js 嵌入，数据来自会员服务。"},
    "en": {"html_lang": "en", "title": "Demo Shop · Home", "shop_name": "Demo Shop",
           "nav_home": "Home", "nav_new": "New in", "nav_all": "All items", "other_lang": "中文",
           "banner": "Double 12 · member prices", "as_member": "What a member sees:",
           "as_guest": "What a new visitor sees:", "new_visitor": "another new visitor",
           "item_1": "Moisturising cream 50ml", "item_2": "Facial cleanser 120g", "item_3": "Serum 30ml",
           "footer": "A demo shop: the member module is embedded with widget.js, over the membership services."},
}


@router.get("/", response_class=HTMLResponse)
async def demo_storefront(request: Request, lang: Literal["zh", "en"] = "zh",
                          visitor: str | None = Query(None, pattern=r"^[0-9]{1,6}$")) -> HTMLResponse:
    """The demo shop's home page with the card embedded twice: for the demo member and for a
    demo non-member (`?visitor=N` a fresh one, who has not joined yet). Their tokens are minted
    here, as the shop's backend would."""
    demo = request.app.state.demo
    if demo is None:
        raise Problem(404, "no demo storefront on this gateway (the embedded default serves one)",
                      reason="NOT_FOUND")
    guest_id = f"{demo.guest_buyer_id}-{visitor}" if visitor else demo.guest_buyer_id
    tokens = request.app.state.tokens
    member_token, _ = tokens.issue(Buyer(demo.shop_id, demo.member_buyer_id, follows_shop=True))
    guest_token, _ = tokens.issue(Buyer(demo.shop_id, guest_id, follows_shop=True))
    words = WORDS[lang]
    other = "zh" if lang == "en" else "en"
    values = {**words, "lang": lang, "shop_id": demo.shop_id, "member_buyer_id": demo.member_buyer_id,
              "guest_buyer_id": guest_id, "member_token": member_token, "guest_token": guest_token,
              "member_token_url": f"/demo/buyer-token?buyer_id={demo.member_buyer_id}",
              "guest_token_url": f"/demo/buyer-token?buyer_id={guest_id}",
              "other_lang_href": f"/?lang={other}" + (f"&visitor={visitor}" if visitor else ""),
              "new_visitor_href": f"/?lang={lang}&visitor={secrets.randbelow(999_999) + 1}"}
    page = STOREFRONT.substitute({key: html.escape(value) for key, value in values.items()})
    # The page carries buyer tokens: never stored by a cache.
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.get("/demo/buyer-token")
async def demo_buyer_token(request: Request, buyer_id: str = Query(max_length=64)) -> Response:
    """The demo shop's own backend, as a shop runs one: a fresh buyer token for the widget's
    `data-token-url` (a shop checks its session cookie here; the demo hands tokens for its demo
    buyers only)."""
    demo = request.app.state.demo
    known = demo is not None and (buyer_id == demo.member_buyer_id or buyer_id == demo.guest_buyer_id
                                  or buyer_id.startswith(demo.guest_buyer_id + "-"))
    if not known:
        raise Problem(404, "no such demo buyer on this gateway", reason="NOT_FOUND")
    token, expires = request.app.state.tokens.issue(Buyer(demo.shop_id, buyer_id, follows_shop=True))
    return JSONResponse({"token": token, "expires_at": expires}, headers={"Cache-Control": "no-store"})
