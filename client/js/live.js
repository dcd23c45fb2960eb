// The live page: paste a token, attach, watch events. The token stays in
// this page's memory: it is never shown, stored or sent anywhere but to this
// server's /ws.
import { connect } from "./airlay.js";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 200;
let client = null;
let token = "";
let count = 0;

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
  li.append(meta, document.createTextNode(JSON.stringify(e.data)));
}

async function main() {
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
  }

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
        } else if (s.state === "close") {
          setState(s.reason === "normal" ? "closed" : "reconnecting", s.reason === "normal" ? "closed" : "connecting");
        } else {
          setState("reconnecting", "connecting");
          $("hint").textContent =
            `Cannot connect. If allowed_origins is restricted, it must list ${location.origin} for this page to work.`;
        }
        const detail = s.state === "fail" ? ": " + s.error : s.state === "close" ? ` (${s.reason}, code ${s.code || "-"})` : "";
        log(`connection ${s.state}${detail}`, s.state !== "open");
        renderSubs();
      },
      onEvent,
      onError: (e) => log(`${e.action} ${e.type} ${e.id || ""} failed: ${e.answer ? e.answer.message : e.error}`, true),
    });
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
      const a = await client.attach(type, id, () => {});
      log(`attach ${type} ${id}: ${a.message} (code ${a.code})`, a.code !== 0);
    } catch (err) {
      log(`attach ${type} ${id}: ${err}`, true);
    }
    renderSubs();
  };
}

main();
