// JIT approver console. Every action is a plain HTML form that works
// without this script. With it:
//  - countdowns tick;
//  - the live part of the page is fetched again whenever the server says
//    something changed (server-sent events), keeping every form exactly as
//    the approver left it (ticks, duration, comments, focus);
//  - forms are posted with fetch, so acting on one request never reloads
//    the page and drops what is typed elsewhere; the answer is shown in
//    place, refusals apart from successes;
//  - the approve button says what will be granted, as the approver edits;
//  - what is typed is kept in sessionStorage, so that an ended session
//    leads to sign-in and back to the same request with it restored.
(function () {
  "use strict";

  var DRAFT = "jit-draft:";
  var live, flashArea, statusEl, staleNote;
  var messages = {}; // form action → {kind, text}: refusals shown by their form

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // ---- countdowns
  function left(ms) {
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    return (h > 0 ? h + ":" + mm : m) + ":" + ss + " left";
  }

  function tick() {
    var now = Date.now();
    $$(".countdown[data-deadline]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("data-deadline")) - now;
      el.textContent = ms > 0 ? left(ms) : (el.getAttribute("data-ends") || "over");
      el.classList.toggle("soon", ms > 0 && ms < 60000);
      el.classList.toggle("over", ms <= 0);
    });
  }

  // ---- what the approve button says
  function checkedPerms(form) {
    return $$('input[name="perm"]', form).filter(function (c) { return c.checked; }).map(function (c) { return c.value; });
  }

  function label(form) {
    var btn = $(".approve-btn", form);
    if (!btn) { return; }
    var perms = checkedPerms(form);
    var dur = ($('input[name="duration"]', form).value || "").trim() || form.getAttribute("data-requested");
    if (perms.length === 0) {
      btn.textContent = "Approve: tick a permission first";
      btn.disabled = true;
    } else {
      btn.textContent = "Approve " + perms.join(", ") + " for " + dur;
      btn.disabled = false;
    }
  }

  function labels(root) { $$("form.approve", root).forEach(label); }

  // ---- drafts: what the approver typed into a request's forms
  function cardOf(el) { return el.closest ? el.closest("article.request") : null; }

  function draftOf(card) {
    var a = $("form.approve", card), d = $("form.deny", card);
    if (!a && !d) { return null; }
    var out = {};
    if (a) {
      var all = $$('input[name="perm"]', a);
      out.perms = checkedPerms(a);
      out.narrowed = out.perms.length !== all.length;
      out.duration = $('input[name="duration"]', a).value;
      out.requested = a.getAttribute("data-requested");
      out.comment = $('input[name="comment"]', a).value;
    }
    if (d) { out.deny = $('input[name="comment"]', d).value; }
    return out;
  }

  function typed(d) {
    return d && (d.narrowed || (d.duration && d.duration.trim() !== d.requested) || d.comment || d.deny);
  }

  function saveDraft(card) {
    try {
      var d = draftOf(card), key = DRAFT + card.getAttribute("data-request");
      if (typed(d)) { sessionStorage.setItem(key, JSON.stringify(d)); } else { sessionStorage.removeItem(key); }
    } catch (e) { /* storage unavailable: drafts are best effort */ }
  }

  function loadDraft(id) {
    try { return JSON.parse(sessionStorage.getItem(DRAFT + id) || "null"); } catch (e) { return null; }
  }

  function clearDraft(id) {
    try { sessionStorage.removeItem(DRAFT + id); } catch (e) { /* best effort */ }
  }

  // restoreDrafts puts saved drafts back into the request cards under root,
  // except those in skip (cards the page showed already: what their forms
  // hold is newer than any saved draft).
  function restoreDrafts(root, skip) {
    $$("article.request[data-request]", root).forEach(function (card) {
      var id = card.getAttribute("data-request");
      if (skip && skip[id]) { return; }
      var d = loadDraft(id);
      if (!d) { return; }
      var a = $("form.approve", card), f = $("form.deny", card);
      if (a && d.perms) {
        $$('input[name="perm"]', a).forEach(function (c) { c.checked = d.perms.indexOf(c.value) >= 0; });
        if (d.duration) { $('input[name="duration"]', a).value = d.duration; }
        if (d.comment) { $('input[name="comment"]', a).value = d.comment; }
        label(a);
      }
      if (f && d.deny) { $('input[name="comment"]', f).value = d.deny; }
    });
  }

  // ---- messages
  function message(kind, text) {
    var p = document.createElement("p");
    p.className = "flash " + kind;
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    p.textContent = text;
    return p;
  }

  function showGlobal(kind, text) {
    flashArea.textContent = "";
    var p = message(kind, text);
    p.id = "flash";
    flashArea.appendChild(p);
  }

  // showAt shows a refusal right under the form it answers, where the
  // approver is looking; it stays there across live updates.
  function showAt(form, kind, text) {
    messages[form.getAttribute("action")] = { kind: kind, text: text };
    placeMessages();
  }

  function placeMessages() {
    $$(".form-msg").forEach(function (el) { el.parentNode.removeChild(el); });
    Object.keys(messages).forEach(function (action) {
      var form = $$("form.act").filter(function (f) { return f.getAttribute("action") === action; })[0];
      if (!form) { delete messages[action]; return; }
      var m = messages[action], p = message(m.kind, m.text);
      p.classList.add("form-msg");
      form.appendChild(p);
    });
  }

  function setStale(on) {
    if (staleNote) { staleNote.hidden = !on; }
    if (live) { live.classList.toggle("stale", on); }
  }

  function setStatus(text, cls) {
    if (!statusEl) { return; }
    statusEl.textContent = text;
    statusEl.className = "status" + (cls ? " " + cls : "");
  }

  function setToken(tok) {
    if (!tok) { return; }
    var meta = $('meta[name="csrf-token"]');
    if (meta) { meta.setAttribute("content", tok); }
    $$('input[name="csrf"]').forEach(function (i) { i.value = tok; });
  }

  // ---- the session ended: sign in again, and come back
  function signInAgain() {
    var only = document.body.getAttribute("data-single"), next = only ? "/console/requests/" + only : "";
    var focused = cardOf(document.activeElement || document.body), firstTyped = "";
    $$("article.request[data-request]").forEach(function (card) {
      saveDraft(card);
      var id = card.getAttribute("data-request");
      if (!next && card === focused) { next = "/console/requests/" + id; }
      if (!firstTyped && typed(draftOf(card))) { firstTyped = "/console/requests/" + id; }
    });
    next = next || firstTyped || "/console/";
    window.location.assign("/console/login?next=" + encodeURIComponent(next));
  }

  // ---- live refresh, keeping every form as the approver left it
  function capture() {
    var state = {};
    $$("input[id], textarea[id], select[id]", live).forEach(function (el) {
      if (el.type === "hidden") { return; }
      state[el.id] = (el.type === "checkbox" || el.type === "radio") ? { checked: el.checked } : { value: el.value };
    });
    var a = document.activeElement;
    if (a && a.id && live.contains(a)) {
      state["\u0000focus"] = { id: a.id, start: a.selectionStart, end: a.selectionEnd };
    }
    return state;
  }

  function restore(state) {
    Object.keys(state).forEach(function (id) {
      var el = document.getElementById(id), s = state[id];
      if (!el || id === "\u0000focus") { return; }
      if ("checked" in s) { el.checked = s.checked; } else { el.value = s.value; }
    });
    var f = state["\u0000focus"];
    if (f && document.getElementById(f.id)) {
      var el = document.getElementById(f.id);
      el.focus();
      try { if (f.start !== null && f.start !== undefined) { el.setSelectionRange(f.start, f.end); } } catch (e) { /* not a text field */ }
    }
  }

  var busy = false, again = false;
  function refresh() {
    if (!live) { return; }
    if (busy) { again = true; return; }
    busy = true;
    fetch(document.body.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { signInAgain(); return null; }
        if (!r.ok) { setStale(true); return null; }
        setToken(r.headers.get("X-CSRF-Token"));
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var before = {}, shown = {};
        $$("article.request[data-request]", live).forEach(function (card) {
          shown[card.getAttribute("data-request")] = true;
          if (typed(draftOf(card))) { before[card.getAttribute("data-request")] = $(".agent", card).textContent; }
        });
        var state = capture();
        live.innerHTML = html;
        restore(state);
        restoreDrafts(live, shown);
        labels(live);
        placeMessages();
        tick();
        setStale(false);
        Object.keys(before).forEach(function (id) {
          if (!document.getElementById("req-" + id) && !acted[id]) {
            clearDraft(id);
            showGlobal("info", "The request of " + before[id] + " you were answering was decided meanwhile; see Recent decisions.");
          }
        });
      })
      .catch(function () { setStale(true); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  // ---- actions with fetch
  var acted = {}; // request ids answered from this page

  function submit(e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("act") || !window.fetch) { return; }
    e.preventDefault();
    if (form.getAttribute("data-busy")) { return; }
    form.setAttribute("data-busy", "1");
    var buttons = $$("button", form);
    buttons.forEach(function (b) { b.disabled = true; });
    var card = cardOf(form), id = card ? card.getAttribute("data-request") : "";
    if (card) { saveDraft(card); }
    var meta = $('meta[name="csrf-token"]');
    var body = new URLSearchParams(new FormData(form));
    delete messages[form.getAttribute("action")];
    placeMessages();
    flashArea.textContent = ""; // the last message was about something else
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "Accept": "application/json", "X-CSRF-Token": meta ? meta.getAttribute("content") : "" }
    }).then(function (r) {
      return r.json().then(function (j) { return { status: r.status, j: j }; }, function () { return { status: r.status, j: {} }; });
    }).then(function (res) {
      if (res.status === 401) {
        // Post the same form the plain way: the server keeps what it
        // carries through the sign-in and shows it again afterwards.
        HTMLFormElement.prototype.submit.call(form);
        return;
      }
      var j = res.j || {};
      if (res.status >= 200 && res.status < 300) {
        if (id) { acted[id] = true; clearDraft(id); }
        var c = $('input[name="comment"]', form);
        if (c && !card) { c.value = ""; }
        showGlobal(j.kind || "success", j.message || "Done.");
        refresh();
      } else {
        showAt(form, "error", j.message || ("Refused (HTTP " + res.status + ")."));
        if (res.status === 403) { refresh(); } // a stale token: get the current one
      }
    }).catch(function () {
      showAt(form, "error", "Could not reach the server: nothing was done. Check the connection and try again.");
      setStale(true);
    }).then(function () {
      form.removeAttribute("data-busy");
      buttons.forEach(function (b) { b.disabled = false; });
      if (form.classList.contains("approve")) { label(form); }
    });
  }

  // ---- live updates
  var es = null;
  function connect() {
    if (!window.EventSource || !statusEl) { return; }
    es = new EventSource("/console/events");
    es.addEventListener("open", function () {
      setStatus("live", "on");
      refresh(); // catch up on anything missed while disconnected
    });
    es.addEventListener("changed", refresh);
    es.addEventListener("error", function () {
      setStatus("reconnecting…", "");
      var closed = es.readyState === EventSource.CLOSED;
      // Is it the session or the server? Ask once.
      fetch(document.body.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { es.close(); signInAgain(); return; }
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          if (closed) { es.close(); setTimeout(connect, 2000); }
        })
        .catch(function () {
          setStatus("offline", "off");
          setStale(true);
          if (closed) { es.close(); setTimeout(connect, 3000); }
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live = document.getElementById("live");
    flashArea = document.getElementById("flash-area");
    statusEl = document.getElementById("live-status");
    staleNote = document.getElementById("stale-note");
    restoreDrafts(document);
    labels(document);
    tick();
    setInterval(tick, 1000);
    document.addEventListener("submit", submit);
    document.addEventListener("input", function (e) {
      var form = e.target.form;
      if (!form) { return; }
      if (form.classList.contains("approve")) { label(form); }
      var card = cardOf(form);
      if (card) { saveDraft(card); }
    });
    document.addEventListener("change", function (e) {
      var form = e.target.form;
      if (form && form.classList.contains("approve")) { label(form); }
      var card = form && cardOf(form);
      if (card) { saveDraft(card); }
    });
    var auto = $("[data-autofocus]");
    if (auto) { auto.focus(); }
    connect();
  });
})();
