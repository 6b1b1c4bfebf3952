"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const resp = await fetch("/api/session/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    }),
  });
  const body = await resp.json();
  if (resp.status !== 200) {
    hotline.text("login-error", body.message + " (" + body.error_id + ")");
    return;
  }
  const next = new URLSearchParams(location.search).get("next");
  const home = body.user.role === "supervisor" ? "/wallboard" : "/desk";
  // Only a path on this site: never an address someone put in the link.
  location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : home;
});
