// Optional: the console works without JavaScript. This counts deadlines down and
// reloads pages that wait for something (an element with data-refresh="SECONDS").
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
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var live = document.querySelector("[data-refresh]");
    if (live) {
      var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 5;
      setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
  });
})();
