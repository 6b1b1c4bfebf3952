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
  let workCall = null; // the call whose work order the form holds (the agent's edits are kept)
  const FIELDS = { ticket_type: "t-type", caller: "t-caller", account: "t-account",
    address: "t-address", intent: "t-intent", description: "t-description" };
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
    const work = next.work;
    show("work", ["on_call", "wrap_up"].includes(s) && !!work);
    if (work) renderWork(work, next);
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

  function options(id, values, chosen) {
    const select = document.getElementById(id);
    if ([...select.options].map((o) => o.value).join("\n") !== values.join("\n")) {
      select.replaceChildren(...values.map((v) => { const o = hotline.el("option", v); o.value = v; return o; }));
    }
    if (chosen) select.value = chosen;
  }

  // The draft fills the form once per call; later renders keep what the agent typed.
  function renderWork(work, next) {
    hotline.text("work-call", work.call_id);
    hotline.text("ticket-done", work.ticket_id ? "工单 Ticket " + work.ticket_id : "");
    hotline.text("transferred", work.transferred_to ? "已转接 Transferred to " + work.transferred_to : "");
    if (workCall === work.call_id) return;
    workCall = work.call_id;
    options("t-type", next.ticket_types || [], work.draft.ticket_type);
    options("wrap-code", next.wrap_codes || [], work.code || undefined);
    options("transfer-queue", (next.transfer_queues || []).filter((q) => q !== work.skill));
    for (const [key, id] of Object.entries(FIELDS)) document.getElementById(id).value = work.draft[key] || "";
    document.getElementById("t-urgent").checked = !!work.draft.urgent;
    hotline.text("t-confidence", work.draft.address_confidence || "–");
  }

  function ticketBody() {
    const ticket = { address_confidence: document.getElementById("t-confidence").textContent.replace("–", "") };
    for (const [key, id] of Object.entries(FIELDS)) ticket[key] = document.getElementById(id).value;
    ticket.urgent = document.getElementById("t-urgent").checked;
    return { call_id: workCall, code: document.getElementById("wrap-code").value, ticket };
  }

  function endBody(survey) {
    return { call_id: workCall, code: document.getElementById("wrap-code").value, survey };
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
    on("complete-button", () => act("POST", "/api/desk/end", endBody(true)));
    on("end-button", () => act("POST", "/api/desk/end", endBody(false)));
    on("ticket-button", () => act("POST", "/api/desk/ticket", ticketBody()));
    on("transfer-button", () => act("POST", "/api/desk/transfer",
      { call_id: workCall, skill: document.getElementById("transfer-queue").value }));
    on("done-button", () => act("POST", base + "/ready"));
    const first = await hotline.call("GET", "/api/desk");
    if (first.status === 200) render(first.body);
    const stream = new EventSource("/api/desk/stream");
    stream.onmessage = (ev) => render(JSON.parse(ev.data));
    setInterval(tick, 250);
  }
  start();
})();
