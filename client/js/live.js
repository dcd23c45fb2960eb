// The live page: the operator console (paste the publish token: numbers,
// charts, a publish form, who is attached to an object) and the
// subscription debugger (paste a user's token, attach, watch events). The
// tokens stay in this page's memory: never shown, stored or sent anywhere
// but to this server.
import { connect } from "./airlay.js";
import { startConsole } from "./console.js";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 200;
let client = null;
let token = "";
let count = 0;
let reloads = 0;
let pubToken = "";
let stopConsole = null;

// What the debugger's hint says for each cause of a failed connection
// (airlay.js tells them apart).
const CAUSES = {
  origin: () =>
    `The server refuses this page's origin ${location.origin}: it is not in allowed_origins (behind a proxy, pass Host and X-Forwarded-Proto).`,
  unreachable: () => "The server cannot be reached: it is down, or the network is.",
  refused: () => "The server answers HTTP but refuses WebSocket connections: it may be full (max_connections), or a proxy does not pass upgrades.",
  unavailable: () => "The server is not ready: shutting down, or MongoDB is down.",
  timeout: () => "The server does not answer in time.",
};

function row(list, text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  list.prepend(li);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
  return li;
}

function log(text, bad) {
  row($("log"), new Date().toLocaleTimeString() + "  " + text, bad ? "bad" : "");
}

function setState(text, cls) {
  $("state").textContent = text;
  $("state").className = "state " + cls;
}

function renderSubs() {
  const ul = $("subs");
  ul.replaceChildren();
  const subs = client ? client.subscriptions() : [];
  if (subs.length === 0) {
    row(ul, "none", "empty");
    return;
  }
  for (const s of subs) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.textContent = "Detach";
    b.className = "detach";
    b.onclick = async () => {
      const a = await client.detach(s.type, s.id);
      log(`detach ${s.type} ${s.id || ""}: ${a.message} (code ${a.code})`, a.code !== 0);
      renderSubs();
    };
    li.append(b, document.createTextNode(s.type + (s.id ? " " + s.id : "")));
    const pos = client.pos(s.type, s.id);
    const p = document.createElement("span");
    p.className = "pos";
    p.textContent = pos ? " since " + pos : " (no event yet)";
    li.append(p);
    ul.append(li);
  }
}

function onEvent(e) {
  count++;
  $("count").textContent = String(count);
  const li = row($("events"), "");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${new Date().toLocaleTimeString()} ${e.type} ${e.id}`;
  const pos = document.createElement("span");
  pos.className = "pos";
  pos.title = "the event's position: after a drop the client re-attaches with the last one as since";
  pos.textContent = e.pos || "";
  li.append(meta, document.createTextNode(JSON.stringify(e.data) + " "), pos);
  renderSubs(); // the subscription's last position
}

// askPerson shows a backend's request and resolves with what the person
// types (JSON when it parses, else the text): airlay.js sends it as the
// reply. The first reply of any tab of the user wins.
function askPerson(data, req) {
  const list = $("requests");
  if (list.firstElementChild && list.firstElementChild.classList.contains("empty")) list.replaceChildren();
  return new Promise((resolve) => {
    const li = row(list, "", "request");
    li.dataset.id = req.id;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${new Date().toLocaleTimeString()} request ${req.id}`;
    const q = document.createElement("code");
    q.textContent = JSON.stringify(data);
    const input = document.createElement("input");
    input.className = "reply-text";
    input.placeholder = "your answer (JSON or text)";
    input.spellcheck = false;
    const b = document.createElement("button");
    b.textContent = "Reply";
    b.className = "reply-btn";
    const status = document.createElement("span");
    status.className = "reply-status";
    const send = () => {
      const text = input.value.trim();
      let value = text;
      try {
        value = JSON.parse(text);
      } catch {
        // plain text
      }
      b.disabled = input.disabled = true;
      status.textContent = " sending…";
      resolve(value);
    };
    b.onclick = send;
    input.onkeydown = (ev) => {
      if (ev.key === "Enter") send();
    };
    li.append(meta, document.createTextNode(" "), q, document.createElement("br"), input, b, status);
    log(`request ${req.id}: ${JSON.stringify(data)}`);
  });
}

// onReply shows the server's answer to a reply: taken, or refused (another
// tab replied first, or the request timed out).
function onReply(r) {
  const li = [...$("requests").children].find((el) => el.dataset.id === r.id);
  const ok = r.answer.code === 0;
  const text = ok ? " reply taken" : ` refused: ${r.answer.message} (code ${r.answer.code}): answered elsewhere or timed out`;
  if (li) {
    li.querySelector(".reply-status").textContent = text;
    li.classList.add(ok ? "replied" : "bad");
  }
  log(`reply ${r.id}:${text}`, !ok);
}

// onReload: a re-attach after a drop could not recover what was missed.
function onReload(r) {
  reloads++;
  log(`reload ${r.type} ${r.id || ""}: the server could not prove nothing was missed while away (recovered: false); an application reloads this object now`, true);
}

async function main() {
  window.airlayLiveStarted = true; // live-boot.js reports a page whose modules never ran
  try {
    const r = await fetch("/api/config", { cache: "no-store" });
    const cfg = await r.json();
    $("server").textContent = `server ${cfg.version} · ${location.host}`;
    for (const t of cfg.event_types) {
      const o = document.createElement("option");
      o.value = o.textContent = t;
      $("type").append(o);
    }
  } catch (err) {
    log("GET /api/config failed: " + err, true);
    $("console-status").textContent = "GET /api/config failed: the server cannot be reached or refuses this page (" + err + ").";
    $("console-status").className = "hint bad";
  }
  for (const o of $("type").options) $("who-type").append(new Option(o.value, o.value));
  setupConsole();

  $("connect").onsubmit = (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = ""; // keep it out of the DOM
    $("token").placeholder = token ? "token set (paste another to replace it)" : "paste a token";
    if (!token) {
      log("no token", true);
      return;
    }
    if (client) return; // the new token is used from the next request on
    client = connect({
      url: location.origin,
      token: () => token,
      onState: (s) => {
        if (s.state === "open") {
          setState("open", "open");
          $("hint").textContent = "";
          $("hint").className = "hint";
        } else if (s.state === "close") {
          setState(s.reason === "normal" ? "closed" : "reconnecting", s.reason === "normal" ? "closed" : "connecting");
        } else {
          setState("reconnecting", "connecting");
          const why = CAUSES[s.cause];
          $("hint").textContent = (why ? why() : "Cannot connect: " + s.error) + " Trying again.";
          $("hint").className = "hint bad";
        }
        const detail = s.state === "fail" ? ": " + s.error : s.state === "close" ? ` (${s.reason}, code ${s.code || "-"})` : "";
        log(`connection ${s.state}${detail}`, s.state !== "open");
        renderSubs();
      },
      onEvent,
      onReload,
      onError: (e) => log(`${e.action} ${e.type} ${e.id || ""} failed: ${e.answer ? e.answer.message : e.error}`, true),
    });
    client.on("reply", onReply);
    setState("connecting", "connecting");
    $("attach-btn").disabled = false;
    $("disconnect-btn").disabled = false;
    $("connect-btn").textContent = "Replace token";
  };

  $("disconnect-btn").onclick = () => {
    if (!client) return;
    client.close();
    client = null;
    token = "";
    $("token").placeholder = "paste a token";
    $("attach-btn").disabled = true;
    $("disconnect-btn").disabled = true;
    $("connect-btn").textContent = "Connect";
    renderSubs();
  };

  $("attach").onsubmit = async (ev) => {
    ev.preventDefault();
    if (!client) return;
    const type = $("type").value;
    const id = $("id").value.trim();
    try {
      const a = type === "request" ? await client.onRequest(askPerson) : await client.attach(type, id, () => {});
      log(`attach ${type} ${id}: ${a.message} (code ${a.code})`, a.code !== 0);
    } catch (err) {
      log(`attach ${type} ${id}: ${err}`, true);
    }
    renderSubs();
  };
}

function consoleElements() {
  return {
    connections: $("stat-connections"),
    subscriptions: $("stat-subscriptions"),
    in: $("stat-in"),
    inTotal: $("stat-in-total"),
    out: $("stat-out"),
    outTotal: $("stat-out-total"),
    latency: $("stat-latency"),
    slow: $("stat-slow"),
    stream: $("stat-stream"),
    lag: $("stat-lag"),
    chartConns: $("chart-conns"),
    chartEvents: $("chart-events"),
    chartLatency: $("chart-latency"),
    chartSlow: $("chart-slow"),
    chartLag: $("chart-lag"),
  };
}

function consoleStatus(text, bad) {
  $("console-status").textContent = text;
  $("console-status").className = bad ? "hint bad" : "hint";
}

// answerText is an API answer for the page: the JSON, and its detail
// first when it is an error.
function answerText(status, body) {
  const json = JSON.stringify(body);
  return status === 200 ? json : `refused (HTTP ${status}): ${body.detail || body.message || ""}\n${json}`;
}

function setupConsole() {
  $("console-auth").onsubmit = (ev) => {
    ev.preventDefault();
    const t = $("pubtoken").value.trim();
    $("pubtoken").value = ""; // keep it out of the DOM
    if (!t) {
      consoleStatus("Paste the publish token first.", true);
      return;
    }
    pubToken = t;
    $("pubtoken").placeholder = "publish token set (paste another to replace it)";
    if (stopConsole) stopConsole();
    consoleStatus("Asking the server…", false);
    stopConsole = startConsole(pubToken, consoleElements(), consoleStatus);
    $("console-stop").disabled = false;
    $("pub-btn").disabled = false;
    $("who-btn").disabled = false;
    $("ask-btn").disabled = false;
  };
  $("console-stop").onclick = () => {
    if (stopConsole) stopConsole();
    stopConsole = null;
    pubToken = "";
    $("pubtoken").placeholder = "the server's publish_token (kept in this page only)";
    $("console-stop").disabled = true;
    $("pub-btn").disabled = true;
    $("who-btn").disabled = true;
    $("ask-btn").disabled = true;
    consoleStatus("Stopped; the publish token is forgotten.", false);
  };
  $("publish").onsubmit = async (ev) => {
    ev.preventDefault();
    if (!pubToken) return;
    const out = $("pub-answer");
    const q = $("pub-wait").checked ? "?wait=2" : "";
    try {
      const r = await fetch("/api/events" + q, {
        method: "POST",
        headers: { Authorization: "Bearer " + pubToken, "Content-Type": "application/json" },
        body: $("pub-body").value,
      });
      const body = await r.json().catch(() => ({ message: r.statusText }));
      out.textContent = answerText(r.status, body);
      out.className = r.ok ? "answer" : "answer bad";
    } catch (err) {
      out.textContent = "The server cannot be reached: " + err;
      out.className = "answer bad";
    }
  };
  $("ask").onsubmit = async (ev) => {
    ev.preventDefault();
    if (!pubToken) return;
    const out = $("ask-answer");
    out.textContent = "waiting for the reply…";
    out.className = "answer";
    try {
      let data;
      try {
        data = JSON.parse($("ask-data").value || "[]");
      } catch (err) {
        out.textContent = "The data is not JSON: " + err;
        out.className = "answer bad";
        return;
      }
      const body = JSON.stringify({ user: $("ask-user").value.trim(), data });
      const r = await fetch("/api/ask?timeout=" + encodeURIComponent($("ask-timeout").value || "10"), {
        method: "POST",
        headers: { Authorization: "Bearer " + pubToken, "Content-Type": "application/json" },
        body,
      });
      const a = await r.json().catch(() => ({ message: r.statusText }));
      out.textContent = answerText(r.status, a);
      out.className = r.ok ? "answer" : "answer bad";
    } catch (err) {
      out.textContent = "The server cannot be reached: " + err;
      out.className = "answer bad";
    }
  };
  $("who").onsubmit = async (ev) => {
    ev.preventDefault();
    if (!pubToken) return;
    const type = $("who-type").value;
    const id = $("who-id").value.trim();
    const tbody = $("who-list").tBodies[0];
    tbody.replaceChildren();
    try {
      const u = new URL("/api/console/attached", location.origin);
      u.searchParams.set("type", type);
      u.searchParams.set("id", id);
      const r = await fetch(u, { headers: { Authorization: "Bearer " + pubToken }, cache: "no-store" });
      const body = await r.json().catch(() => ({ message: r.statusText }));
      if (!r.ok) {
        $("who-summary").textContent = answerText(r.status, body);
        $("who-summary").className = "hint bad";
        return;
      }
      const shown = body.connections.length;
      $("who-summary").textContent =
        `${body.total} connection${body.total === 1 ? "" : "s"} of this instance hold ${body.type} ${body.id}` +
        (shown < body.total ? ` (the oldest ${shown} below)` : "");
      $("who-summary").className = "hint";
      for (const c of body.connections) {
        const tr = document.createElement("tr");
        for (const v of [c.conn, c.user, c.remote, c.opened, c.subscriptions]) {
          const td = document.createElement("td");
          td.textContent = String(v);
          tr.append(td);
        }
        tbody.append(tr);
      }
    } catch (err) {
      $("who-summary").textContent = "The server cannot be reached: " + err;
      $("who-summary").className = "hint bad";
    }
  };
}

main();
