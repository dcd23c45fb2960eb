// airlay.js: the browser client of the airlay event server. One ES module,
// no dependencies; the server serves it at /client/airlay.js.
//
//   import { connect } from "https://events.example.com/client/airlay.js";
//   const client = connect({ token: () => getAccessToken() });
//   client.on("state", (s) => console.log("airlay", s));
//   const answer = await client.attach("issueUpdate", "610217e481f6fc54736209e0",
//     (event) => console.log(event.type, event.id, event.data));
//   // answer: {status, message, code}; code 0: attached
//
// It finds the WebSocket endpoint through GET /api/config, asks the token
// provider for a token whenever it needs one (and again before the token
// expires), and after a drop reconnects with exponential backoff and full
// jitter, re-attaching every subscription with "since", the position of
// the last event it got of it: the events missed while away then arrive
// through the same callbacks, in order; when the server cannot recover
// them ("recovered": false) the "reload" listeners and the subscription's
// onReload get {type, id}: reload that object. The server's contract is in
// PROTOCOL.md; the README of the airlay repository documents this module.
//
// A backend may ask this frontend something (POST /api/ask):
//
//   client.onRequest(async (data, request) => ({ editing: isEditing(data[0]) }));
//
// attaches "request"; each request's data goes to the callback, and its
// value (or what its Promise resolves to) is sent as the reply (a value
// that is not an array is sent as [value]). A callback that throws or
// rejects sends no reply (the backend gets 504 at its timeout).

const NOTIFICATION = "notification";
const REQUEST = "request";
const OBJECT_ID = /^[0-9a-fA-F]{24}$/;

/** Default options. Times in milliseconds. */
export const DEFAULTS = Object.freeze({
  minBackoff: 500, // first wait after a drop lies in [minBackoff, 2*minBackoff]
  maxBackoff: 30000, // no wait is longer
  connectTimeout: 10000, // one attempt: discovery and WebSocket handshake
  refreshBefore: 30000, // replace a token this long before its exp; < 0: never ahead of time
});

/**
 * backoffDelay returns the wait before attempt n (0 after a connection that
 * worked): uniformly random in [min, min(max, min * 2^(n+1))], so clients
 * dropped together come back spread out.
 */
export function backoffDelay(n, min, max, random = Math.random) {
  const ceil = Math.min(max, min * Math.pow(2, n + 1));
  return min + random() * Math.max(0, ceil - min);
}

/** tokenExpiry returns the exp of a JWT in ms (unverified), or 0. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

function subKey(type, id) {
  if (type === NOTIFICATION || type === REQUEST) return type; // one per connection, whatever the id
  return type + ":" + (OBJECT_ID.test(id || "") ? id.toLowerCase() : id || "");
}

function isOK(a) {
  return a && a.code === 0 && a.status === 200;
}

/**
 * AirlayClient: one connection to the server that comes back after drops.
 * Events: "state" ({state: "open"} | {state: "close", reason: "normal" |
 * "drop", code, text, retry} | {state: "fail", error, cause, retry}, cause
 * one of "unreachable", "origin", "refused", "unavailable", "timeout",
 * "discovery", "url"), "event"
 * (every event), "error" (a re-attach or token refresh that failed),
 * "reload" ({type, id}: a re-attach after a drop could not recover the
 * events missed meanwhile; reload that object).
 */
export class AirlayClient {
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.options = o;
    // The server: its base URL (discovery through /api/config) or its
    // ws:// URL. Default: the server that served this module.
    this.url = o.url || new URL(import.meta.url).origin;
    this.config = null; // the answer of /api/config once known
    this.state = "connecting"; // "connecting" | "open" | "closed"
    this._listeners = { state: new Set(), event: new Set(), error: new Set(), reload: new Set(), reply: new Set() };
    if (o.onState) this.on("state", o.onState);
    if (o.onEvent) this.on("event", o.onEvent);
    if (o.onError) this.on("error", o.onError);
    if (o.onReload) this.on("reload", o.onReload);
    this._subs = new Map(); // key -> {type, id, callbacks: Set, reloads: Set, pos}
    this._queue = []; // requests waiting for a connection
    this._pending = []; // requests sent, waiting for their answer, in order
    this._ws = null;
    this._up = false; // _ws is open
    this._attempt = 0;
    this._closed = false;
    this._timer = null; // reconnect
    this._refreshTimer = null;
    this._token = null; // {value, refreshAt, stale}
    this._tokenFetch = null;
    this._flushing = false;
    // The position of the latest event of any subscription: the since of a
    // subscription that got none itself (a server's positions are ordered
    // across subscriptions).
    this._lastPos = "";
  }

  /** on subscribes fn to "state", "event", "error" or "reload"; returns a function that unsubscribes. */
  on(name, fn) {
    this._listeners[name].add(fn);
    return () => this._listeners[name].delete(fn);
  }

  /** start connects (connect() calls it). */
  start() {
    if (!this._ws && !this._timer && !this._closed) this._connect();
    return this;
  }

  /**
   * attach subscribes to (type, id) and resolves with the server's answer.
   * With code 0 the callback gets each event of that subscription, and the
   * subscription is re-attached after every reconnect, with since the
   * position of its last event. onReload, when given, is called with
   * {type, id} when such a re-attach answers recovered:false (reload the
   * object: events may have been missed).
   */
  attach(type, id, callback, onReload) {
    return this._request({ action: "attach", type, id, callback, onReload });
  }

  /**
   * onRequest attaches "request" and answers each request of a backend
   * (POST /api/ask) with what callback(data, request) returns or resolves
   * to: an array is the reply's data, any other value is sent as [value];
   * a throw or a rejection sends no reply. Resolves with the attach's
   * answer. The reply's own answer (code 5 when another tab replied first
   * or the request timed out) goes to the "reply" listeners as
   * {id, answer}.
   */
  onRequest(callback) {
    return this.attach(REQUEST, undefined, (e) => this._ask(e, callback));
  }

  /** reply sends data (an array) as the reply to request id and resolves with the server's answer: code 0 taken, 5 not an open request (another reply won, timed out). */
  reply(id, data) {
    if (this._closed) return Promise.reject(new Error("airlay: client closed"));
    return new Promise((resolve, reject) => {
      this._queue.push({ action: "reply", type: REQUEST, id, data: Array.isArray(data) ? data : [], resolve, reject });
      this._flush();
    });
  }

  async _ask(e, callback) {
    let value;
    try {
      value = await callback(e.data, e);
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
      return;
    }
    if (this._closed) return;
    const data = Array.isArray(value) ? value : value === undefined ? [] : [value];
    const answer = await this.reply(e.id, data).catch(() => null);
    if (answer) this._emit("reply", { id: e.id, answer });
  }

  /** pos returns the position of the last event of (type, id), or "" before the first. */
  pos(type, id) {
    const sub = this._subs.get(subKey(type, id));
    return (sub && sub.pos) || "";
  }

  /**
   * detach removes callback (every callback when none is given); when none
   * is left it unsubscribes and resolves with the server's answer.
   */
  detach(type, id, callback) {
    const sub = this._subs.get(subKey(type, id));
    if (sub && callback) {
      sub.callbacks.delete(callback);
      if (sub.callbacks.size > 0) return Promise.resolve({ status: 200, message: "Ok", code: 0 });
    }
    return this._request({ action: "detach", type, id });
  }

  /** subscriptions lists what the client holds. */
  subscriptions() {
    return [...this._subs.values()].map((s) => ({ type: s.type, id: s.id }));
  }

  /** close closes the connection (a "normal" close) and stops reconnecting. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    this._timer = null;
    for (const r of this._queue.splice(0)) r.reject(new Error("airlay: client closed"));
    if (this._ws) {
      this._ws.close(1000);
    } else {
      this._setState("closed");
      this._emit("state", { state: "close", reason: "normal" });
    }
  }

  // --- requests ---------------------------------------------------------

  _request(req) {
    if (this._closed) return Promise.reject(new Error("airlay: client closed"));
    if (!req.type) return Promise.reject(new Error("airlay: no event type"));
    return new Promise((resolve, reject) => {
      this._queue.push({ ...req, resolve, reject });
      this._flush();
    });
  }

  async _flush() {
    if (this._flushing) return;
    this._flushing = true;
    try {
      while (this._queue.length > 0 && this._up) {
        const ws = this._ws;
        let token;
        try {
          token = await this._getToken();
        } catch (err) {
          const r = this._queue.shift();
          if (r.internal) this._emit("error", { action: r.action, type: r.type, id: r.id, error: String(err) });
          r.reject(err);
          if (r.internal) this._resubscribed(r);
          continue;
        }
        if (ws !== this._ws || !this._up) break; // the connection changed meanwhile
        const r = this._queue.shift();
        const event = { type: r.type };
        if (r.id) event.id = r.id;
        this._pending.push(r);
        const req = { auth: token, action: r.action, event };
        if (r.since) req.since = r.since;
        if (r.action === "reply") req.data = r.data;
        ws.send(JSON.stringify(req));
      }
    } finally {
      this._flushing = false;
    }
    if (this._queue.length > 0 && this._up) this._flush();
  }

  _answer(a) {
    const r = this._pending.shift();
    if (!r) return;
    if (a.code === 1 || a.code === 2) this._invalidateToken();
    if (r.action === "reply") {
      r.resolve(a);
      return;
    }
    if (isOK(a)) {
      const key = subKey(r.type, r.id);
      if (r.action === "attach") {
        let sub = this._subs.get(key);
        if (!sub) {
          sub = { type: r.type, id: r.id, callbacks: new Set(), reloads: new Set(), pos: "" };
          this._subs.set(key, sub);
        }
        if (r.callback) sub.callbacks.add(r.callback);
        if (r.onReload) sub.reloads.add(r.onReload);
        // Judged before the replayed events that follow the answer.
        if (r.since && a.recovered === false) this._reload(sub);
      } else {
        this._subs.delete(key);
      }
    } else if (r.internal) {
      this._emit("error", { action: r.action, type: r.type, id: r.id, answer: a });
    }
    r.resolve(a);
    if (r.internal) this._resubscribed(r);
  }

  _reload(sub) {
    const what = { type: sub.type, id: sub.id };
    for (const cb of sub.reloads) {
      try {
        cb(what);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
    this._emit("reload", what);
  }

  _event(e) {
    const sub = this._subs.get(subKey(e.type, e.id));
    // A request's position is none to resume after: requests are kept in no history.
    if (typeof e.pos === "string" && e.pos && e.type !== REQUEST) {
      this._lastPos = e.pos;
      if (sub) sub.pos = e.pos;
    }
    if (sub) {
      for (const cb of sub.callbacks) {
        try {
          cb(e);
        } catch (err) {
          setTimeout(() => {
            throw err;
          });
        }
      }
    }
    this._emit("event", e);
  }

  // --- tokens -------------------------------------------------------------

  async _getToken() {
    const t = this._token;
    if (t && !t.stale && (!t.refreshAt || Date.now() < t.refreshAt)) {
      if (t.refreshAt && !this._refreshTimer) this._armRefresh(); // disarmed by a close
      return t.value;
    }
    if (!this._tokenFetch) {
      this._tokenFetch = (async () => {
        const provider = this.options.token;
        if (typeof provider !== "function") throw new Error("airlay: no token provider (options.token)");
        const value = String((await provider()) || "").trim();
        if (!value) throw new Error("airlay: the token provider returned no token");
        const now = Date.now();
        const exp = tokenExpiry(value);
        let refreshAt = 0;
        if (exp && this.options.refreshBefore >= 0 && !(t && t.value === value)) {
          // refreshBefore ahead of exp, but not before 3/4 of its remaining life
          refreshAt = Math.max(exp - this.options.refreshBefore, now + ((exp - now) * 3) / 4);
        }
        this._token = { value, refreshAt, stale: false };
        this._armRefresh();
        return value;
      })().finally(() => {
        this._tokenFetch = null;
      });
    }
    return this._tokenFetch;
  }

  _invalidateToken() {
    if (this._token) this._token.stale = true;
  }

  _armRefresh() {
    clearTimeout(this._refreshTimer);
    const t = this._token;
    if (!t || !t.refreshAt || this._closed) return;
    const fire = () => {
      // An idempotent attach with the new token extends the connection.
      const first = this._subs.values().next().value;
      if (!first || !this._up) {
        // Nothing held yet, or between connections: look again shortly
        // rather than let the token run out.
        if (!this._closed) this._refreshTimer = setTimeout(fire, 250);
        return;
      }
      // Due now, even if the timer fired a hair early (timers may fire
      // before Date.now() reaches refreshAt, which then served the old
      // token again and never refreshed).
      if (this._token === t) t.stale = true;
      this._request({ action: "attach", type: first.type, id: first.id, internal: "refresh" }).catch(() => {});
    };
    this._refreshTimer = setTimeout(fire, Math.max(0, t.refreshAt - Date.now()));
  }

  // --- the connection -------------------------------------------------------

  async _wsURL() {
    if (/^wss?:/.test(this.url)) return this.url;
    if (!this.config) {
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), this.options.connectTimeout);
      try {
        const r = await fetch(new URL("/api/config", this.url), { signal: ctl.signal, cache: "no-store" });
        if (r.status === 403) throw new FailCause("origin", originRefused(this.url));
        if (!r.ok) throw new FailCause("discovery", "GET /api/config answered " + r.status);
        this.config = await r.json();
      } catch (err) {
        if (err instanceof FailCause) throw err;
        if (ctl.signal.aborted) throw new FailCause("timeout", "GET /api/config took longer than " + this.options.connectTimeout + " ms");
        throw await diagnose(this.url, this.options.connectTimeout);
      } finally {
        clearTimeout(timer);
      }
    }
    const u = new URL(this.config.websocket || "/ws", this.url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }

  async _connect() {
    this._timer = null;
    if (this._closed) return;
    this._setState("connecting");
    let url;
    try {
      url = await this._wsURL();
    } catch (err) {
      if (err instanceof FailCause) this._failed(err.message, err.cause);
      else this._failed("discovery at " + this.url + " failed: " + (err && err.message ? err.message : err), "discovery");
      return;
    }
    if (this._closed) return;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this._failed(String(err), "url");
      return;
    }
    this._ws = ws;
    let opened = false;
    let timedOut = false;
    const timeout = setTimeout(() => {
      timedOut = true;
      ws.close();
    }, this.options.connectTimeout);
    ws.onopen = () => {
      clearTimeout(timeout);
      opened = true;
      if (this._closed) {
        ws.close(1000);
        return;
      }
      this._up = true;
      this._resubscribe();
    };
    ws.onmessage = (m) => {
      let f;
      try {
        f = JSON.parse(m.data);
      } catch {
        return;
      }
      if (f && typeof f.status === "number") this._answer(f);
      else if (f && typeof f.type === "string") this._event(f);
    };
    ws.onclose = (e) => {
      clearTimeout(timeout);
      this._ws = null;
      this._up = false;
      // Requests not answered go again on the next connection; re-attaches
      // are made afresh.
      const lost = this._pending.splice(0).filter((r) => !r.internal);
      this._queue = this._queue.filter((r) => !r.internal);
      this._queue.unshift(...lost);
      clearTimeout(this._refreshTimer);
      this._refreshTimer = null;
      if (this._closed) {
        for (const r of this._queue.splice(0)) r.reject(new Error("airlay: client closed"));
        this._setState("closed");
        this._emit("state", { state: "close", reason: "normal", code: e.code, text: e.reason });
        return;
      }
      if (!opened) {
        // A browser does not say why a handshake failed (the status is
        // hidden): ask the server over HTTP to tell the causes apart.
        if (timedOut) {
          this._failed("could not open " + url + ": no answer within " + this.options.connectTimeout + " ms", "timeout");
          return;
        }
        diagnoseWS(url, this.options.connectTimeout).then((c) => this._failed("could not open " + url + ": " + c.message, c.cause));
        return;
      }
      if (this._wasOpen) this._attempt = 0;
      if (e.code === 4001) this._invalidateToken();
      const retry = this._nextDelay();
      this._emit("state", { state: "close", reason: "drop", code: e.code, text: e.reason, retry });
      this._schedule(retry);
    };
  }

  _resubscribe() {
    this._wasOpen = false;
    const subs = [...this._subs.values()];
    this._resubLeft = subs.length;
    const reqs = subs.map((s) => ({
      action: "attach",
      type: s.type,
      id: s.id,
      since: s.type === REQUEST ? undefined : s.pos || this._lastPos || undefined,
      internal: "resubscribe",
      resolve: () => {},
      reject: () => {},
    }));
    this._queue = reqs.concat(this._queue.filter((r) => !r.internal));
    if (subs.length === 0) this._opened();
    this._flush();
  }

  _resubscribed(r) {
    if (r.internal !== "resubscribe") return;
    if (--this._resubLeft === 0 && this._up) this._opened();
  }

  _opened() {
    this._wasOpen = true;
    this._setState("open");
    this._emit("state", { state: "open" });
    this._armRefresh();
  }

  _failed(error, cause) {
    if (this._closed) return;
    const retry = this._nextDelay();
    this._emit("state", { state: "fail", error, cause, retry });
    this._schedule(retry);
  }

  _nextDelay() {
    const o = this.options;
    return backoffDelay(this._attempt++, o.minBackoff, o.maxBackoff, o.random || Math.random);
  }

  _schedule(delay) {
    this._setState("connecting");
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _setState(s) {
    this.state = s;
  }

  _emit(name, value) {
    for (const fn of this._listeners[name]) {
      try {
        fn(value);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

// --- why a connection failed ----------------------------------------------

/** FailCause is a failed attempt with its cause (see "state" events). */
class FailCause extends Error {
  constructor(cause, message) {
    super(message);
    this.cause = cause;
  }
}

function originRefused(base) {
  const here = typeof location !== "undefined" ? location.origin : "this page's origin";
  return "the server at " + new URL(base).origin + " refuses the origin " + here + " (not in its allowed_origins)";
}

function httpBase(url) {
  const u = new URL(url);
  if (u.protocol === "ws:") u.protocol = "http:";
  if (u.protocol === "wss:") u.protocol = "https:";
  return u.origin;
}

async function timedFetch(url, init, ms) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    return await fetch(url, { ...init, signal: ctl.signal, cache: "no-store" });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * diagnose tells why GET /api/config at base failed: a no-cors request
 * succeeds whenever the server answers at all (its answer stays opaque),
 * so a failure there means the server cannot be reached, and a success
 * means the server answered but the browser refused the page its answer:
 * the origin is not allowed.
 */
async function diagnose(base, ms) {
  try {
    await timedFetch(new URL("/api/config", base), { mode: "no-cors" }, ms);
  } catch {
    return new FailCause("unreachable", "the server at " + new URL(base).origin + " cannot be reached (down, wrong URL, or the network)");
  }
  return new FailCause("origin", originRefused(base));
}

/** diagnoseWS tells why a WebSocket handshake with url failed. */
async function diagnoseWS(url, ms) {
  const base = httpBase(url);
  let r;
  try {
    r = await timedFetch(new URL("/api/config", base), { mode: "cors" }, ms);
  } catch {
    return diagnose(base, ms);
  }
  if (r.status === 403) return new FailCause("origin", originRefused(base));
  let ready = 0;
  try {
    ready = (await timedFetch(new URL("/readyz", base), { mode: "no-cors" }, ms)).status;
  } catch {
    // an opaque answer or none: nothing more to learn
  }
  if (ready === 503) return new FailCause("unavailable", "the server answers but is not ready (shutting down, or a dependency is down)");
  return new FailCause(
    "refused",
    "the server answers HTTP but refused the WebSocket handshake (full: max_connections; shutting down; or a proxy does not pass WebSocket upgrades)",
  );
}

/** connect returns a client that is connecting. */
export function connect(options) {
  return new AirlayClient(options).start();
}
