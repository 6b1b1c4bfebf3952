// Shared by the desk and the wallboard: the session, API calls with the CSRF header, formatting.
"use strict";
const hotline = {
  csrf: "",
  user: null,
  // The logged-in user, or off to the login page.
  async session() {
    const resp = await fetch("/api/session", { credentials: "same-origin" });
    if (resp.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      return null;
    }
    const body = await resp.json();
    hotline.csrf = body.csrf_token;
    hotline.user = body.user;
    return body.user;
  },
  // An API call: {status, body}; state changes carry the session's CSRF token.
  async call(method, path, body) {
    const headers = { "X-CSRF-Token": hotline.csrf };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const answer = await resp.json();
    if (resp.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
    }
    return { status: resp.status, body: answer };
  },
  async logout() {
    await hotline.call("POST", "/api/session/logout");
    location.href = "/login";
  },
  // Seconds as m:ss (h:mm:ss past an hour); "–" for none.
  duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
  },
  percent(share) {
    return share === null || share === undefined ? "–" : Math.round(share * 100) + "%";
  },
  text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  },
  // A new element with text content (never innerHTML: names and context come from callers).
  el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
  },
};
