// JIT approver console: live countdowns, and live refresh of the page's
// live part when the server reports a change (server-sent events). Every
// action is a plain HTML form; this script only keeps the page current.
(function () {
  "use strict";

  function left(ms) {
    if (ms <= 0) { return "expired"; }
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    return (h > 0 ? h + ":" + mm : m) + ":" + ss + " left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("data-deadline")) - now;
      el.textContent = left(ms);
      el.classList.toggle("soon", ms > 0 && ms < 60000);
      el.classList.toggle("over", ms <= 0);
    });
  }

  // refresh fetches the live part and swaps it in, keeping what the
  // approver was typing and where the focus was.
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    var live = document.getElementById("live");
    fetch(document.body.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/console/login"); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        var keep = {}, focus = document.activeElement && document.activeElement.id;
        live.querySelectorAll("input[id]").forEach(function (el) {
          keep[el.id] = el.type === "checkbox" ? el.checked : el.value;
        });
        live.innerHTML = html;
        Object.keys(keep).forEach(function (id) {
          var el = document.getElementById(id);
          if (!el) { return; }
          if (el.type === "checkbox") { el.checked = keep[id]; } else { el.value = keep[id]; }
        });
        if (focus && document.getElementById(focus)) { document.getElementById(focus).focus(); }
        tick();
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function connect() {
    var status = document.getElementById("live-status");
    if (!window.EventSource || !status) { return; }
    var es = new EventSource("/console/events");
    es.addEventListener("open", function () {
      status.textContent = "live";
      status.classList.add("on");
      refresh(); // catch up on anything missed while disconnected
    });
    es.addEventListener("changed", refresh);
    es.addEventListener("error", function () {
      status.textContent = "reconnecting";
      status.classList.remove("on");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
