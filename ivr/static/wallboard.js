// The wallboard: figures pushed by /api/wallboard/stream (one computation per node for all).
"use strict";
(() => {
  let board = null;
  let skew = 0;
  const notReady = (agents) => Object.values(agents.not_ready).reduce((a, b) => a + b, 0);

  function tile(id, label, value) {
    const t = hotline.el("div", undefined, "tile");
    t.append(hotline.el("div", label, "label"));
    const v = hotline.el("div", String(value), "value");
    v.id = id;
    t.append(v);
    return t;
  }

  function render(next) {
    board = next;
    skew = next.now - Date.now() / 1000;
    const o = next.overall, t = o.today, a = o.agents;
    document.getElementById("overall").replaceChildren(
      tile("overall-waiting", "排队 Calls waiting", o.waiting),
      tile("overall-longest", "最长等待 Longest wait", hotline.duration(o.longest_wait)),
      tile("overall-sl", "服务水平 Service level (20 s)", hotline.percent(t.service_level)),
      tile("overall-asa", "平均应答 ASA", hotline.duration(t.asa)),
      tile("overall-aht", "平均处理 AHT", hotline.duration(t.aht)),
      tile("overall-offered", "今日来电 Offered today", t.offered),
      tile("overall-answered", "已接 Answered", t.answered),
      tile("overall-abandoned", "放弃 Abandoned", t.abandoned),
      tile("overall-callbacks", "待回拨 Callbacks pending", o.callbacks_waiting),
      tile("overall-available", "空闲 Available", a.available),
      tile("overall-talking", "通话 On call", a.on_call + a.reserved),
      tile("overall-wrap", "话后 Wrap-up", a.wrap_up),
      tile("overall-not-ready", "示忙 Not ready", notReady(a)),
    );
    const queues = document.getElementById("queues");
    queues.replaceChildren();
    for (const q of next.queues) {
      const tr = document.createElement("tr");
      tr.dataset.skill = q.skill;
      for (const value of [q.skill, q.waiting, hotline.duration(q.longest_wait), q.callbacks_waiting,
        q.offered, q.connected, q.today.offered, q.today.answered, q.today.abandoned,
        hotline.percent(q.today.service_level), hotline.duration(q.today.asa),
        hotline.duration(q.today.aht), q.agents.available + " / " + q.agents.staffed]) {
        tr.append(hotline.el("td", String(value)));
      }
      queues.append(tr);
    }
    const alerts = document.getElementById("alerts");
    alerts.replaceChildren();
    for (const al of next.alerts) {
      alerts.append(hotline.el("div", alertText(al), "alert " + al.alert));
    }
    if (!next.alerts.length) alerts.append(hotline.el("p", "none"));
    renderChart();
    renderAgents();
  }

  function alertText(al) {
    if (al.alert === "longest-wait") {
      return `${al.skill}: longest wait ${hotline.duration(al.value)} over ${hotline.duration(al.threshold)}`;
    }
    if (al.alert === "surge") {
      const minutes = Math.round(al.window_seconds / 60);
      return `来电激增 Surge · ${al.skill || "all queues"}: ${al.value} calls in ${minutes} min ` +
        `(usually ${al.baseline})`;
    }
    return `${al.skill}: service level ${hotline.percent(al.value)} under ${hotline.percent(al.threshold)}`;
  }

  // The chart of the last hours: all queues, or the queue chosen.
  const SERIES = [["offered", "来电 Offered"], ["answered", "已接 Answered"], ["abandoned", "放弃 Abandoned"]];

  function renderChart() {
    const history = board && board.history;
    if (!history) return;
    const select = document.getElementById("chart-queue");
    const skills = Object.keys(history.queues);
    const known = Array.from(select.options).slice(1).map((o) => o.value);
    if (known.join("|") !== skills.join("|")) {
      const chosen = select.value;
      select.replaceChildren(select.options[0]);
      for (const skill of skills) select.append(new Option(skill, skill));
      select.value = skills.includes(chosen) ? chosen : "";
    }
    const figures = select.value ? history.queues[select.value] : history.overall;
    barChart.draw(document.getElementById("chart"), history.starts,
      SERIES.map(([name, label]) => ({ name, label, className: name, values: figures[name] })));
  }

  // A supervisor may force an agent not ready or out of the queues (the agents API).
  async function force(agentId, action) {
    const path = "/api/agents/" + encodeURIComponent(agentId) + "/" + action;
    const { status, body } = await hotline.call("POST", path,
      action === "not-ready" ? { reason: "supervisor" } : undefined);
    hotline.text("wallboard-error", status === 200 ? "" : body.message + " (" + body.error_id + ")");
  }

  function renderAgents() {
    const body = document.getElementById("agents");
    body.replaceChildren();
    for (const ag of board.agents) {
      const tr = document.createElement("tr");
      tr.dataset.agent = ag.agent_id;
      const state = document.createElement("td");
      state.append(hotline.el("span", ag.state, "state " + ag.state));
      const since = hotline.el("td", "", "in-state");
      since.dataset.since = ag.since;
      const actions = document.createElement("td");
      for (const [action, label] of [["not-ready", "示忙 Not ready"], ["logout", "签出 Log out"]]) {
        const button = hotline.el("button", label, "force-" + action);
        button.addEventListener("click", () => force(ag.agent_id, action));
        actions.append(button);
      }
      tr.append(hotline.el("td", ag.agent_id), state, hotline.el("td", ag.reason), since,
        hotline.el("td", ag.call_id), actions);
      body.append(tr);
    }
    tickAgents();
  }

  function tickAgents() {
    if (!board) return;
    const now = Date.now() / 1000 + skew;
    for (const td of document.querySelectorAll("#agents td.in-state")) {
      td.textContent = hotline.duration(now - Number(td.dataset.since));
    }
    hotline.text("updated", new Date(board.now * 1000).toLocaleTimeString());
  }

  async function start() {
    const user = await hotline.session();
    if (!user) return;
    if (user.role !== "supervisor") { location.href = "/desk"; return; }
    hotline.text("who", (user.name || "") + " " + user.username);
    document.getElementById("logout-button").addEventListener("click", () => hotline.logout());
    document.getElementById("chart-queue").addEventListener("change", renderChart);
    const stream = new EventSource("/api/wallboard/stream");
    stream.onmessage = (ev) => render(JSON.parse(ev.data));
    setInterval(tickAgents, 1000);
  }
  start();
})();
