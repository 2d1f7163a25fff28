// The member centre (会员中心): plain JS over the gateway's /v1/me endpoints. The buyer token comes
// in the URL fragment (#token=...), the shop in the query (?shop_id=...), `lang=en` for English.
// Everything the services say is put in the page as text (textContent), never as HTML.
(function () {
  "use strict";

  var WORDS = {
    zh: {
      title: "会员中心", join: "加入会员", joinIntro: "授权以下信息后入会（可不勾选）：", name: "姓名", phone: "手机号",
      joinButton: "立即入会", profile: "我的资料", tier: "会员等级", points: "我的积分", signIn: "每日签到",
      signInButton: "签到", ledger: "积分明细", ledgerEmpty: "暂无积分明细", more: "加载更多", coupons: "我的优惠券",
      unused: "未使用", used: "已使用", expired: "已过期", couponsEmpty: "暂无优惠券", rewards: "积分兑换",
      rewardsEmpty: "暂无可兑换的权益", lottery: "抽奖", lotteryEmpty: "暂无进行中的抽奖", leave: "退出会员",
      leaveWarning: "退出后您的会员资料将被删除，积分将清零，且无法恢复。", leaveReason: "退出原因（选填）",
      leaveConfirm: "确认退出", cancel: "取消", loading: "加载中…", redeem: "兑换", draw: "抽一次",
      pointsUnit: "积分", nextTier: "距离{tier}还需消费 ¥{spend}", topTier: "已是最高等级", growth: "成长值 {n}",
      expiry: "{n} 积分将于 {date} 过期", noExpiry: "暂无即将过期的积分", redeemed: "兑换成功：{name}",
      signedIn: "签到成功，获得 {n} 积分，已连续签到 {days} 天", drawn: "抽中：{prize}", drawNothing: "谢谢参与",
      left: "您已退出会员", joined: "入会成功", noToken: "缺少买家凭证：请从店铺页面重新进入会员中心",
      threshold: "满¥{t}减¥{v}", noThreshold: "无门槛 ¥{v}", validUntil: "有效期至 {date}", cash: " + ¥{c}",
      drawCost: "每次 {n} 积分", freeDraws: "每月免费 {n} 次", failed: "操作失败"
    },
    en: {
      title: "Member centre", join: "Join", joinIntro: "Share these details to join (optional):", name: "Name",
      phone: "Phone", joinButton: "Join now", profile: "My profile", tier: "Tier", points: "My points",
      signIn: "Daily sign-in", signInButton: "Sign in", ledger: "Points history", ledgerEmpty: "No points yet",
      more: "More", coupons: "My coupons", unused: "Unused", used: "Used", expired: "Expired",
      couponsEmpty: "No coupons", rewards: "Redeem points", rewardsEmpty: "Nothing to redeem", lottery: "Lucky draw",
      lotteryEmpty: "No draw running", leave: "Leave membership",
      leaveWarning: "Leaving deletes your member profile and forfeits your points. It cannot be undone.",
      leaveReason: "Why are you leaving? (optional)", leaveConfirm: "Yes, leave", cancel: "Cancel",
      loading: "Loading…", redeem: "Redeem", draw: "Draw", pointsUnit: "points",
      nextTier: "Spend ¥{spend} more to reach {tier}", topTier: "Top tier reached", growth: "Growth {n}",
      expiry: "{n} points expire on {date}", noExpiry: "No points expiring soon", redeemed: "Redeemed: {name}",
      signedIn: "Signed in: +{n} points, {days}-day streak", drawn: "You won: {prize}", drawNothing: "No prize this time",
      left: "You have left the membership", joined: "Welcome, you are a member", failed: "Something went wrong",
      noToken: "No buyer token: open the member centre from the shop's page again",
      threshold: "¥{v} off ¥{t}", noThreshold: "¥{v} off", validUntil: "valid until {date}", cash: " + ¥{c}",
      drawCost: "{n} points a draw", freeDraws: "{n} free a month"
    }
  };
  var REASONS = {
    zh: {
      INSUFFICIENT_POINTS: "积分不足", TIER_TOO_LOW: "会员等级不足", OUT_OF_STOCK: "已兑完", LIMIT_REACHED: "已达兑换上限",
      MONTHLY_LIMIT_REACHED: "本月已达兑换上限", NOT_STARTED: "尚未开始", ENDED: "已结束", NOT_ACTIVE: "暂不可兑换",
      NOT_A_MEMBER: "您还不是会员", ALREADY_SIGNED_IN_TODAY: "今日已签到，明天再来", ALREADY_MEMBER: "您已是会员",
      JOIN_THRESHOLD_NOT_MET: "暂不满足入会条件", TOKEN_EXPIRED: "登录已过期，请从店铺页面重新进入",
      INVALID_TOKEN: "买家凭证无效", LOTTERY_NOT_RUNNING: "抽奖未在进行中"
    },
    en: {
      INSUFFICIENT_POINTS: "Not enough points", TIER_TOO_LOW: "Tier too low", OUT_OF_STOCK: "Out of stock",
      LIMIT_REACHED: "Limit reached", MONTHLY_LIMIT_REACHED: "Monthly limit reached", NOT_STARTED: "Not started yet",
      ENDED: "Ended", NOT_ACTIVE: "Not available", NOT_A_MEMBER: "You are not a member yet",
      ALREADY_SIGNED_IN_TODAY: "Already signed in today: come back tomorrow", ALREADY_MEMBER: "You are already a member",
      JOIN_THRESHOLD_NOT_MET: "You cannot join yet", TOKEN_EXPIRED: "Your session expired: open it from the shop again",
      INVALID_TOKEN: "Invalid buyer token", LOTTERY_NOT_RUNNING: "The draw is not running"
    }
  };
  var KINDS = {
    zh: { earn: "获得", spend: "使用", hold: "使用", capture: "兑换", release: "退回", expire: "过期", adjust: "调整",
          clawback: "退款扣回", forfeit: "清零" },
    en: { earn: "Earned", spend: "Spent", hold: "Spent", capture: "Redeemed", release: "Released", expire: "Expired",
          adjust: "Adjusted", clawback: "Refund", forfeit: "Forfeited" }
  };
  var ACTIONS = {
    zh: { purchase: "购物", join: "入会", follow_shop: "关注店铺", complete_profile: "完善资料", daily_sign_in: "每日签到",
          review: "评价", share: "分享", invite_friend: "邀请好友", referral: "老带新", browse: "浏览", survey: "问卷",
          daily_pool: "瓜分积分" },
    en: { purchase: "Purchase", join: "Joined", follow_shop: "Followed the shop", complete_profile: "Profile completed",
          daily_sign_in: "Daily sign-in", review: "Review", share: "Share", invite_friend: "Invited a friend",
          referral: "Referral", browse: "Browsing", survey: "Survey", daily_pool: "Daily pool" }
  };

  var query = new URLSearchParams(location.search);
  var lang = query.get("lang") === "en" ? "en" : "zh";
  var shopId = query.get("shop_id") || "";
  var token = tokenFromFragment();
  var ledgerToken = null;
  var couponStatus = "unused";

  function $(id) { return document.querySelector('[data-testid="' + id + '"]'); }
  function t(key, values) {
    var text = WORDS[lang][key] || key;
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(String(values[k])); });
    return text;
  }
  function reasonText(reason, fallback) { return (reason && REASONS[lang][reason]) || fallback || reason || t("failed"); }
  function yuan(fen) { return (fen / 100).toFixed(fen % 100 ? 2 : 0); }
  function date(iso) { return iso ? new Date(iso).toLocaleDateString(lang === "en" ? "en" : "zh-CN") : ""; }
  function dateTime(iso) { return iso ? new Date(iso).toLocaleString(lang === "en" ? "en" : "zh-CN") : ""; }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function tokenFromFragment() {
    var stored = "loyalty-centre-token:" + shopId;
    var fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    var found = fragment.get("token");
    try {
      if (found) {
        sessionStorage.setItem(stored, found);
        // Out of the address bar (and of bookmarks and screenshots); kept for reloads in this tab.
        history.replaceState(null, "", location.pathname + location.search);
      }
      return found || sessionStorage.getItem(stored) || "";
    } catch (e) {
      return found || "";
    }
  }

  // One call to the gateway; a problem (RFC 9457) is thrown as an Error carrying its reason.
  function api(method, path, body, idempotent) {
    var headers = { "Authorization": "Bearer " + token, "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotent) headers["Idempotency-Key"] = newKey();
    var url = path + (path.indexOf("?") < 0 ? "?" : "&") + "shop_id=" + encodeURIComponent(shopId);
    return fetch(url, { method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (answer) {
        return answer.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (!answer.ok) {
            var problem = new Error(reasonText(data && data.reason, (data && data.detail) || answer.status + " " + answer.statusText));
            problem.reason = data && data.reason;
            problem.status = answer.status;
            throw problem;
          }
          return data;
        });
      }, function () { throw new Error(t("failed") + " (network)"); });
  }

  function showError(error) {
    var box = $("centre-error");
    box.textContent = error ? error.message : "";
    box.hidden = !error;
  }
  function status(text) { $("centre-status").textContent = text || ""; }
  function guard(button, work) {
    button.disabled = true;
    showError(null);
    return work().catch(showError).then(function () { button.disabled = false; });
  }

  // ----- sections ---------------------------------------------------------------------------------

  function renderProfile(me, progress) {
    $("profile-name").textContent = me.profile.name || me.member_id;
    $("profile-phone").textContent = me.profile.phone_masked || "";
    $("tier-name").textContent = me.tier.name;
    $("tier-progress-bar").style.width = (progress.progress_permille / 10) + "%";
    $("tier-progress").textContent = progress.next
      ? t("nextTier", { tier: progress.next.name, spend: yuan(progress.spend_missing_fen) }) : t("topTier");
    $("growth-value").textContent = t("growth", { n: progress.growth_value });
  }

  function renderPoints(points) {
    $("points-balance").textContent = points.available + " " + t("pointsUnit");
    $("points-expiry").textContent = points.next_expiry_time
      ? t("expiry", { n: points.next_expiry_amount, date: date(points.next_expiry_time) }) : t("noExpiry");
  }

  function ledgerItem(entry) {
    var what = (entry.action && ACTIONS[lang][entry.action]) || (entry.redemption_id && WORDS[lang].rewards) ||
      KINDS[lang][entry.kind] || entry.kind;
    var sign = entry.amount > 0 ? "+" : "";
    return el("li", { "data-testid": "ledger-entry", "data-entry-id": entry.entry_id }, [
      el("span", {}, [el("span", { text: what }), el("br"), el("span", { class: "muted", text: dateTime(entry.create_time) })]),
      el("span", { class: entry.amount >= 0 ? "plus" : "minus", "data-testid": "ledger-amount", text: sign + entry.amount })
    ]);
  }

  function loadLedger(reset) {
    var path = "/v1/me/ledger?page_size=10" + (!reset && ledgerToken ? "&page_token=" + encodeURIComponent(ledgerToken) : "");
    return api("GET", path).then(function (page) {
      var list = $("ledger-list");
      if (reset) list.textContent = "";
      // A hold's capture moves nothing the buyer can spend (the hold already took the points).
      page.entries.forEach(function (entry) { if (entry.amount !== 0) list.appendChild(ledgerItem(entry)); });
      ledgerToken = page.next_page_token;
      $("ledger-more").hidden = !ledgerToken;
      $("ledger-empty").hidden = list.children.length > 0;
    });
  }

  function couponText(coupon) {
    var value = coupon.threshold_fen
      ? t("threshold", { t: yuan(coupon.threshold_fen), v: yuan(coupon.face_value_fen) })
      : t("noThreshold", { v: yuan(coupon.face_value_fen) });
    return value + (coupon.valid_until ? " · " + t("validUntil", { date: date(coupon.valid_until) }) : "");
  }

  function loadCoupons() {
    Array.prototype.forEach.call(document.querySelectorAll(".tabs [data-status]"), function (tab) {
      tab.setAttribute("aria-selected", String(tab.getAttribute("data-status") === couponStatus));
    });
    return api("GET", "/v1/me/coupons?status=" + couponStatus).then(function (page) {
      var list = $("coupons-list");
      list.textContent = "";
      page.coupons.forEach(function (coupon) {
        list.appendChild(el("li", { "data-testid": "coupon-item", "data-coupon-id": coupon.coupon_id }, [
          el("span", { text: coupon.name }), el("span", { class: "muted", text: couponText(coupon) })
        ]));
      });
      $("coupons-empty").hidden = page.coupons.length > 0;
    });
  }

  function loadRewards() {
    return api("GET", "/v1/me/rewards").then(function (page) {
      var list = $("rewards-list");
      list.textContent = "";
      page.rewards.forEach(function (offer) {
        var price = offer.points_price + " " + t("pointsUnit") + (offer.cash_price_fen ? t("cash", { c: yuan(offer.cash_price_fen) }) : "");
        var why = offer.why_not.map(function (r) { return reasonText(r); }).join("，");
        var button = el("button", { type: "button", "data-testid": "redeem-button", text: t("redeem") });
        button.disabled = !offer.redeemable;
        button.addEventListener("click", function () { guard(button, function () { return redeem(offer); }); });
        list.appendChild(el("li", { "data-testid": "reward-item", "data-reward-id": offer.reward_id }, [
          el("span", {}, [el("span", { text: offer.name }), el("br"), el("span", { class: "muted", text: price }),
            why ? el("span", { class: "why", "data-testid": "reward-why-not", text: " · " + why }) : null]),
          button
        ]));
      });
      $("rewards-empty").hidden = page.rewards.length > 0;
    });
  }

  function redeem(offer) {
    return api("POST", "/v1/me/redemptions", { reward_id: offer.reward_id }, true).then(function () {
      status(t("redeemed", { name: offer.name }));
      return refreshAfterSpending();
    });
  }

  function loadLotteries() {
    return api("GET", "/v1/me/lotteries").then(function (answer) {
      var list = $("lottery-list");
      list.textContent = "";
      answer.lotteries.forEach(function (lottery) {
        var terms = [lottery.cost_points ? t("drawCost", { n: lottery.cost_points }) : "",
          lottery.free_draws_per_month ? t("freeDraws", { n: lottery.free_draws_per_month }) : ""].filter(Boolean).join(" · ");
        var button = el("button", { type: "button", "data-testid": "lottery-draw-button", text: t("draw") });
        button.addEventListener("click", function () {
          guard(button, function () {
            return api("POST", "/v1/me/lottery/" + encodeURIComponent(lottery.lottery_id) + "/draws", {}, true)
              .then(function (drawn) {
                $("lottery-result").textContent = drawn.prize_kind && drawn.prize_kind !== "nothing"
                  ? t("drawn", { prize: drawn.prize_name }) : t("drawNothing");
                return refreshAfterSpending();
              });
          });
        });
        list.appendChild(el("li", { "data-testid": "lottery-item", "data-lottery-id": lottery.lottery_id }, [
          el("span", {}, [el("span", { text: lottery.name }), el("br"), el("span", { class: "muted", text: terms })]),
          button
        ]));
      });
      $("lottery-empty").hidden = answer.lotteries.length > 0;
    });
  }

  // A member who joined a moment ago: points opens their account as soon as it hears of them.
  function later(work) { return new Promise(function (done) { setTimeout(done, 1000); }).then(work); }

  function loadPoints() { return api("GET", "/v1/me/points").then(renderPoints); }

  function refreshAfterSpending() {
    return Promise.all([loadPoints(), loadLedger(true), loadCoupons(), loadRewards()]);
  }

  // Each section loads on its own: one failing shows its error, the others still show.
  function loadMember(me) {
    $("join-section").hidden = true;
    $("member-sections").hidden = false;
    var parts = [
      api("GET", "/v1/me/tier").then(function (progress) { renderProfile(me, progress); }),
      loadPoints(), loadLedger(true), loadCoupons(), loadRewards(), loadLotteries()
    ];
    return Promise.all(parts.map(function (part) { return part.catch(showError); }));
  }

  function load() {
    showError(null);
    return api("GET", "/v1/me").then(loadMember, function (error) {
      if (error.reason !== "NOT_A_MEMBER") throw error;
      $("member-sections").hidden = true;
      $("join-section").hidden = false;
    });
  }

  function join() {
    var consent = [], body = {};
    if ($("join-consent-name").checked && $("join-name").value.trim()) {
      consent.push("name");
      body.name = $("join-name").value.trim();
    }
    if ($("join-consent-phone").checked && $("join-phone").value.trim()) {
      consent.push("phone");
      body.phone = $("join-phone").value.trim();
    }
    body.consent = consent;
    body.channel = "home_page_module";
    return api("POST", "/v1/me/join", body, true).then(function () { status(t("joined")); return load(); });
  }

  function signIn(attempt) {
    return api("POST", "/v1/me/sign-in", {}, true).then(function (done) {
      $("sign-in-result").textContent = t("signedIn", { n: done.points, days: done.streak_days });
      renderPoints(done.balance);
      return loadLedger(true);
    }, function (error) {
      if (error.reason === "ALREADY_SIGNED_IN_TODAY") $("sign-in-result").textContent = error.message;
      else if (error.reason === "POINTS_ACCOUNT_NOT_READY" && (attempt || 0) < 10) return later(function () { return signIn((attempt || 0) + 1); });
      else throw error;
    });
  }

  function leave() {
    var reason = $("leave-reason").value.trim().slice(0, 200);
    return api("POST", "/v1/me/leave", { confirm: true, reason: reason }).then(function () {
      $("member-sections").hidden = true;
      status(t("left"));
    });
  }

  function wire() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n]"), function (node) {
      node.textContent = t(node.getAttribute("data-i18n"));
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-i18n-placeholder]"), function (node) {
      node.setAttribute("placeholder", t(node.getAttribute("data-i18n-placeholder")));
    });
    document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
    document.title = t("title");
    $("join-button").addEventListener("click", function () { guard($("join-button"), join); });
    $("ledger-more").addEventListener("click", function () { guard($("ledger-more"), function () { return loadLedger(false); }); });
    $("sign-in-button").addEventListener("click", function () {
      guard($("sign-in-button"), function () { return signIn(0); });
    });
    Array.prototype.forEach.call(document.querySelectorAll(".tabs [data-status]"), function (tab) {
      tab.addEventListener("click", function () {
        couponStatus = tab.getAttribute("data-status");
        guard(tab, loadCoupons);
      });
    });
    $("leave-button").addEventListener("click", function () { $("leave-confirm").hidden = false; });
    $("leave-cancel-button").addEventListener("click", function () { $("leave-confirm").hidden = true; });
    $("leave-confirm-button").addEventListener("click", function () { guard($("leave-confirm-button"), leave); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire();
    var main = $("centre");
    if (!token || !shopId) {
      showError(new Error(t("noToken")));
      main.setAttribute("aria-busy", "false");
      return;
    }
    status(t("loading"));
    load().catch(showError).then(function () {
      if ($("centre-status").textContent === t("loading")) status("");
      main.setAttribute("aria-busy", "false");
    });
  });
})();
