/* The storefront member card (店铺首页会员模块), embedded by a shop:
 *   <script src="https://GATEWAY/widget.js" data-shop="SHOP_ID" data-token="BUYER_TOKEN"
 *           data-token-url="/your/buyer-token" data-lang="zh|en" data-target="#optional-container" async></script>
 * data-token-url (optional): where the shop's own site hands out a fresh buyer token (same origin,
 * with the buyer's cookies; answers {"token": "..."}): asked once when the gateway refuses the token
 * (it expired while the page stayed open), then the call is made again.
 * Renders into a Shadow DOM (the shop's CSS cannot reach in, ours cannot leak out), calls the
 * gateway the script came from, and links to the member centre with the token in the URL
 * fragment (never sent to a server). No framework, no build step. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) return;
  var gateway = new URL(script.src).origin;
  var shop = script.getAttribute("data-shop") || "";
  var token = script.getAttribute("data-token") || "";
  var tokenUrl = script.getAttribute("data-token-url") || "";
  var lang = script.getAttribute("data-lang") === "en" ? "en" : "zh";
  var LABELS = {
    zh: {member: "会员", points: "积分", join: "立即入会", joining: "入会中…", gift: "入会礼", next: "距下一等级",
         top: "已是最高等级", centre: "会员中心", loading: "会员卡加载中…", error: "会员卡暂时无法加载",
         expired: "登录状态已失效，请刷新页面", retry: "重试", spend: "还差消费 ¥{n}", trades: "还差 {n} 笔交易",
         growth: "还差 {n} 成长值", pending: "积分到账中", joinNow: "加入会员"},
    en: {member: "Member", points: "Points", join: "Join now", joining: "Joining…", gift: "Join gift",
         next: "To next tier", top: "Top tier reached", centre: "Member centre", loading: "Loading the member card…",
         error: "The member card is unavailable", expired: "Your session is no longer valid: reload the page",
         retry: "Retry", spend: "spend ¥{n} more", trades: "{n} more trades", growth: "{n} more growth points",
         pending: "Points on their way", joinNow: "Become a member"}
  }[lang];
  var CSS = [
    ":host{all:initial!important;display:block!important;visibility:visible!important;opacity:1!important;",
    "position:static!important;max-width:702px!important;margin:8px 0!important;contain:content}",
    ":host([data-state=none]){display:none!important}",
    ".card{box-sizing:border-box;font:14px/1.5 -apple-system,'PingFang SC','Microsoft YaHei',sans-serif;",
    "color:#3b2a1a;background:linear-gradient(120deg,#fff4e0,#ffe0b8);border-radius:12px;padding:14px 16px;",
    "display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;min-height:60px;position:relative;overflow:hidden}",
    ".card *{box-sizing:border-box}",
    ".badge{font-size:12px;background:#3b2a1a;color:#ffd9a0;border-radius:10px;padding:1px 8px}",
    ".tier{font-size:18px;font-weight:600}.pts b{font-size:18px;color:#c0390b}",
    ".grow{flex-basis:100%;font-size:12px;color:#7a5a3a}",
    ".bar{height:6px;background:#f3d2a8;border-radius:3px;margin-top:4px;overflow:hidden}",
    ".bar i{display:block;height:100%;background:#e0782b}",
    "a{color:#a0522d;text-decoration:underline;margin-left:auto}",
    "button{font:inherit;cursor:pointer;border:0;border-radius:18px;padding:8px 18px;background:#e0441b;color:#fff;",
    "font-weight:600;margin-left:auto}button[disabled]{opacity:.6;cursor:wait}",
    ".gift{flex:1 1 200px}.gift b{display:block;font-size:12px;color:#a0522d}",
    ".custom{padding:0;aspect-ratio:702/110;min-height:0}.custom img{position:absolute;inset:0;width:100%;",
    "height:100%;object-fit:cover}.custom button{position:absolute;inset:0;width:100%;height:100%;border-radius:0;",
    "background:transparent;color:#fff;font-size:20px;text-shadow:0 1px 3px #000;margin:0}",
    ".muted{color:#7a5a3a}.err{background:#fdecea;color:#8a1f11}"
  ].join("");

  var host = document.createElement("loyalty-member-card");
  host.setAttribute("data-shop", shop);
  var target = script.getAttribute("data-target");
  var slot = null;
  try { slot = target ? document.querySelector(target) : null; } catch (e) { slot = null; }
  if (slot) slot.appendChild(host); else script.parentNode.insertBefore(host, script.nextSibling);
  var root = host.attachShadow({mode: "open"});
  var joinKey = null;
  var polls = 0;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // A constructed style sheet is CSSOM, which a shop's Content-Security-Policy does not block.
  var sheet = null;
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function") {
    try { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); root.adoptedStyleSheets = [sheet]; } catch (e) { sheet = null; }
  }

  function show(state, card) {
    host.setAttribute("data-state", state);
    var content = card || el("div", {"data-testid": "card-none", hidden: ""});
    if (sheet) { root.replaceChildren(content); return; }
    var style = el("style");
    style.textContent = CSS;
    root.replaceChildren(style, content);
  }

  function call(method, path, headers) {
    var url = gateway + path + (path.indexOf("?") < 0 ? "?" : "&") + "shop_id=" + encodeURIComponent(shop);
    var sent = Object.assign({"Authorization": "Bearer " + token, "Accept": "application/json"}, headers || {});
    return fetch(url, {method: method, headers: sent, mode: "cors", credentials: "omit"}).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (body) {
        if (!res.ok) throw {status: res.status, body: body};
        return body;
      });
    });
  }

  function freshToken() {  // from the shop's own site, which knows its buyer
    return fetch(tokenUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (res) { return res.ok ? res.json() : {}; })
      .then(function (body) {
        if (!body || typeof body.token !== "string" || !body.token) throw {status: 401, body: {}};
        token = body.token;
      });
  }

  function api(method, path, headers) {
    return call(method, path, headers).catch(function (error) {
      if (!(error && error.status === 401 && tokenUrl)) throw error;
      return freshToken().then(function () { return call(method, path, headers); },
                               function () { throw error; });
    });
  }

  function fen(amount) {
    return (amount / 100).toLocaleString(lang === "en" ? "en-US" : "zh-CN", {minimumFractionDigits: 2});
  }

  function missing(progress) {
    var parts = [];
    if (progress.spend_missing_fen > 0) parts.push(LABELS.spend.replace("{n}", fen(progress.spend_missing_fen)));
    if (progress.trades_missing > 0) parts.push(LABELS.trades.replace("{n}", progress.trades_missing));
    if (progress.growth_missing > 0) parts.push(LABELS.growth.replace("{n}", progress.growth_missing));
    return parts.join(progress.qualification_mode === "SPEND_OR_COUNT" ? " / " : ", ");
  }

  function filled(permille) {
    var bar = el("i");
    bar.style.width = permille / 10 + "%";
    return bar;
  }

  function centreLink() {
    var href = gateway + "/centre?shop_id=" + encodeURIComponent(shop) + "&lang=" + lang +
      "#token=" + encodeURIComponent(token);
    return el("a", {href: href, target: "_blank", rel: "noopener", "data-testid": "card-centre-link"},
              [LABELS.centre + " ›"]);
  }

  function renderMember(m) {
    var p = m.progress;
    var growth = p.next_tier
      ? el("div", {"class": "grow", "data-testid": "card-progress"}, [
          LABELS.next + " " + p.next_tier.name + (missing(p) ? " · " + missing(p) : ""),
          el("div", {"class": "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "1000",
                     "aria-valuenow": String(p.progress_permille)},
             [filled(p.progress_permille)])])
      : el("div", {"class": "grow", "data-testid": "card-progress"}, [LABELS.top]);
    var points = el("span", {"class": "pts"}, [LABELS.points + " ",
      el("b", {"data-testid": "card-points"}, [String(m.points)])]);
    if (m.points_pending) points.appendChild(el("span", {"class": "muted"}, [" (" + LABELS.pending + ")"]));
    show("member", el("div", {"class": "card", "data-testid": "card-member", part: "card"}, [
      el("span", {"class": "badge"}, [LABELS.member]),
      el("span", {"class": "tier", "data-testid": "card-tier"}, [m.tier.name]),
      points, centreLink(), growth]));
    if (m.points_pending && polls < 5) {
      polls += 1;
      setTimeout(load, 1500);
    }
  }

  function renderJoin(card) {
    var j = card.join;
    var button = el("button", {type: "button", "data-testid": card.mode === "CUSTOM" ? "card-cta" : "card-join-button"},
                    [card.mode === "CUSTOM" ? j.call_to_action || LABELS.joinNow : LABELS.join]);
    button.addEventListener("click", function () { join(button); });
    if (card.mode === "CUSTOM") {
      var parts = [];
      if (j.background_image_url) {
        parts.push(el("img", {src: j.background_image_url, alt: "", "data-testid": "card-background"}));
      }
      parts.push(button);
      show("join", el("div", {"class": "card custom", "data-testid": "card-join", part: "card"}, parts));
      return;
    }
    show("join", el("div", {"class": "card", "data-testid": "card-join", part: "card"}, [
      el("div", {"class": "gift"}, [el("b", {}, [LABELS.gift]), el("span", {"data-testid": "card-gift"}, [j.gift])]),
      button]));
  }

  function render(card) {
    if (card.state === "member" && card.member) renderMember(card.member);
    else if (card.state === "join" && card.join) renderJoin(card);
    else show("none");
  }

  function renderError(error) {
    var expired = error && error.status === 401;
    var detail = error && error.body && error.body.detail;
    var children = [el("span", {"data-testid": "card-error-message"}, [expired ? LABELS.expired : LABELS.error])];
    if (!expired && detail) children.push(el("span", {"class": "muted"}, [detail]));
    if (!expired) {
      var retry = el("button", {type: "button", "data-testid": "card-retry"}, [LABELS.retry]);
      retry.addEventListener("click", load);
      children.push(retry);
    }
    show("error", el("div", {"class": "card err", "data-testid": "card-error", role: "alert", part: "card"}, children));
  }

  function randomKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "join-" + Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function join(button) {
    joinKey = joinKey || randomKey();  // a retry after a failure is the same join
    button.disabled = true;
    button.textContent = LABELS.joining;
    api("POST", "/v1/storefront/join", {"Idempotency-Key": joinKey}).then(render, renderError);
  }

  function load() {
    api("GET", "/v1/storefront/card").then(render, renderError);
  }

  if (!shop || !token) {
    renderError({status: 0, body: {detail: "data-shop / data-token"}});
    return;
  }
  show("loading", el("div", {"class": "card muted", "data-testid": "card-loading", part: "card"}, [LABELS.loading]));
  load();
})();
