// Optional: the console works without JavaScript. This counts deadlines down, makes
// tables that scroll sideways reachable by keyboard, and keeps pages that wait for
// something (an element with data-refresh="SECONDS") current without reloading them:
// regions marked data-live (with an id) are updated in place unless the focus is inside
// them; a page whose items (data-request rows) changed says so in the #live-notice
// status line with a "Reload" link. Nothing here moves the focus or the scroll position.
(function () {
  "use strict";
  function remaining(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    return m + "m " + (r < 10 ? "0" : "") + r + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var left = Date.parse(el.getAttribute("datetime")) - now;
      el.textContent = remaining(left);
      el.classList.toggle("urgent", left < 3600 * 1000);
    });
  }
  function scrollable() {
    // A table that scrolls sideways must be reachable by keyboard (and named).
    document.querySelectorAll("table").forEach(function (t) {
      var wide = t.scrollWidth > t.clientWidth + 1;
      if (wide && !t.hasAttribute("tabindex")) {
        t.setAttribute("tabindex", "0");
        if (!t.hasAttribute("aria-label")) {
          var card = t.closest("section, main");
          var h = card && card.querySelector("h2, h1");
          t.setAttribute("aria-label", (h ? h.textContent.trim() : "table") + " (scrolls sideways)");
        }
      }
    });
  }
  function items(root) {
    var found = {};
    root.querySelectorAll("main [data-request]").forEach(function (el) {
      found[el.getAttribute("data-request")] = true;
    });
    return found;
  }
  function differs(before, after) {
    var added = 0, gone = 0, k;
    for (k in after) if (!(k in before)) added++;
    for (k in before) if (!(k in after)) gone++;
    return { added: added, gone: gone };
  }
  function notice(change) {
    var box = document.getElementById("live-notice");
    if (!box) return;
    var parts = [];
    if (change.added) parts.push(change.added === 1 ? "1 new request" : change.added + " new requests");
    if (change.gone) parts.push(change.gone === 1 ? "1 request was closed" : change.gone + " requests were closed");
    if (!parts.length) { box.textContent = ""; return; }
    box.textContent = "";
    box.appendChild(document.createTextNode(parts.join(", ") + " since this page loaded. "));
    var a = document.createElement("a");
    a.href = window.location.href;
    a.textContent = "Reload";
    box.appendChild(a);
  }
  function live(host) {
    var seconds = parseInt(host.getAttribute("data-refresh"), 10) || 5;
    var shown = items(document);
    var busy = false;
    function poll() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (!r.ok || r.redirected) throw new Error("stop");
          return r.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live][id]").forEach(function (el) {
            var next = fresh.getElementById(el.id);
            if (!next || next.innerHTML === el.innerHTML) return;
            if (el.contains(document.activeElement)) return;  // never under a person's focus
            el.innerHTML = next.innerHTML;
            el.className = next.className;
          });
          notice(differs(shown, items(fresh)));
          scrollable();
          tick();
          if (!fresh.querySelector("[data-refresh]")) clearInterval(timer);  // nothing waits
          busy = false;
        })
        .catch(function () { clearInterval(timer); });
    }
    var timer = setInterval(poll, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    scrollable();
    window.addEventListener("resize", scrollable);
    var host = document.querySelector("[data-refresh]");
    if (host) live(host);
  });
})();
