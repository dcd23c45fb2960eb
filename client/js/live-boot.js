// A classic script (fetched without CORS, unlike modules): when the live
// page's modules did not start, say why on the page instead of leaving it
// dead. The usual cause is a proxy that does not pass the Host header (and
// X-Forwarded-Proto), so that the server takes the page for another origin
// and refuses its module imports with 403.
window.addEventListener("load", () => {
  setTimeout(async () => {
    if (window.airlayLiveStarted) return;
    // A browser sends Origin on module imports but not on a plain
    // same-origin GET; it does on a POST, which /api/* checks first.
    let why = "";
    try {
      const r = await fetch("/api/config", { method: "POST", cache: "no-store" });
      const body = await r.json().catch(() => ({}));
      if (r.status === 403) why = ` The server refuses it: ${body.detail || body.message} (HTTP 403).`;
    } catch (err) {
      why = " The server cannot be reached (" + err + ").";
    }
    const msg =
      "This page's scripts did not start." + why +
      ` The server treats this page (${location.origin}) as another origin: behind a proxy, pass the Host header and X-Forwarded-Proto, or list the origin in allowed_origins.`;
    for (const id of ["console-status", "hint"]) {
      const el = document.getElementById(id);
      if (el) {
        el.textContent = msg;
        el.className = "hint bad";
      }
    }
    document.getElementById("state").textContent = "page not started";
  }, 1000);
});
