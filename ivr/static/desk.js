// The agent desktop: state from /api/desk/stream, actions through the agents API.
"use strict";
(() => {
  const LABELS = {
    caller: "来电号码 Caller", dialed: "被叫 Dialed", intent: "诉求 Intent",
    account: "户号 Account", customer: "客户 Customer", address: "地址 Address",
    address_confidence: "地址置信度 Address confidence", outage: "停电信息 Known outage",
    path: "IVR 路径 Path", tickets: "历史工单 Previous tickets", repeat_caller: "重复来电 Repeat caller",
  };
  let state = null;   // the last desk state
  let skew = 0;       // server clock - browser clock, seconds
  let lastCall = null;
  const show = (id, on) => document.getElementById(id).classList.toggle("hidden", !on);
  const now = () => Date.now() / 1000 + skew;

  function renderPop(call) {
    const table = document.getElementById("pop-table");
    table.replaceChildren();
    const rows = [];
    const context = call.context || {};
    for (const key of Object.keys(LABELS)) if (key in context) rows.push([LABELS[key], context[key]]);
    for (const key of Object.keys(context).sort()) if (!(key in LABELS)) rows.push([key, context[key]]);
    rows.push(["队列 Queue", call.skill], ["等待 Waited", hotline.duration(call.waited_seconds)]);
    for (const [label, value] of rows) {
      const tr = document.createElement("tr");
      tr.append(hotline.el("th", label), hotline.el("td", value));
      table.append(tr);
    }
    hotline.text("pop-call", call.call_id);
  }

  function render(next) {
    state = next;
    skew = next.now - Date.now() / 1000;
    const agent = next.agent;
    const signedIn = agent && agent.state !== "logged_out";
    show("signin", !signedIn);
    show("status", !!signedIn);
    if (next.call) lastCall = next.call;
    const s = signedIn ? agent.state : "";
    show("offer", s === "reserved" && !!next.offer);
    show("pop", ["reserved", "on_call", "wrap_up"].includes(s) && !!lastCall);
    show("oncall", s === "on_call");
    show("wrap", s === "wrap_up");
    if (lastCall && ["reserved", "on_call", "wrap_up"].includes(s)) renderPop(lastCall);
    if (!["reserved", "on_call", "wrap_up"].includes(s)) lastCall = null;
    if (!signedIn) return;
    const badge = document.getElementById("state");
    badge.textContent = agent.state;
    badge.className = "state " + agent.state;
    hotline.text("reason", agent.reason || "");
    hotline.text("calls", agent.calls);
    tick();
  }

  function tick() {
    if (!state || !state.agent) return;
    hotline.text("in-state", hotline.duration(now() - state.agent.since));
    if (state.offer) hotline.text("countdown", Math.max(0, Math.ceil(state.offer.expires_at - now())));
    if (state.agent.wrap_until) hotline.text("wrap-left", hotline.duration(state.agent.wrap_until - now()));
  }

  async function act(method, path, body) {
    const { status, body: answer } = await hotline.call(method, path, body);
    hotline.text("desk-error", status === 200 ? "" : answer.message + " (" + answer.error_id + ")");
    const fresh = await hotline.call("GET", "/api/desk");
    if (fresh.status === 200) render(fresh.body);
  }

  async function start() {
    const user = await hotline.session();
    if (!user) return;
    if (user.role !== "agent") { location.href = "/wallboard"; return; }
    hotline.text("who", (user.name || "") + " " + user.username);
    const base = "/api/agents/" + encodeURIComponent(user.agent_id);
    const on = (id, fn) => document.getElementById(id).addEventListener("click", fn);
    on("logout-button", () => hotline.logout());
    on("signin-button", () => act("POST", "/api/desk/signin", { contact: document.getElementById("contact").value }));
    on("ready-button", () => act("POST", base + "/ready"));
    on("not-ready-button", () => act("POST", base + "/not-ready", { reason: document.getElementById("reason-select").value }));
    on("signout-button", () => act("POST", base + "/logout"));
    on("accept-button", () => act("POST", base + "/accept", { call_id: state.offer.call_id }));
    on("reject-button", () => act("POST", base + "/reject", { call_id: state.offer.call_id }));
    on("complete-button", () => act("POST", base + "/complete"));
    on("done-button", () => act("POST", base + "/ready"));
    const first = await hotline.call("GET", "/api/desk");
    if (first.status === 200) render(first.body);
    const stream = new EventSource("/api/desk/stream");
    stream.onmessage = (ev) => render(JSON.parse(ev.data));
    setInterval(tick, 250);
  }
  start();
})();
