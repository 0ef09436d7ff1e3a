// patchgate admin UI: the only script. Every page works without it; it adds two things:
// 1. live parts: elements with data-live (numbers, states, buttons, banners, lists) are refreshed
//    from the same page every 15 s while someone uses the page (a refresh does not count as
//    session activity), and a stamp says when the page was last brought up to date;
// 2. upload progress: a form with data-upload shows a progress bar while the file is sent.
"use strict";
(function () {
  // A refresh must not keep an unattended session alive: it says so (the server does not count
  // it as activity), and it pauses once nobody has touched the page for 10 minutes, saying so,
  // until someone does. The stamp says when the page was last brought up to date.
  var EVERY = 15000, IDLE = 10 * 60 * 1000;
  var lastInput = Date.now();
  var stamp = document.querySelector("[data-live-stamp]");
  function clock(d) { return d.toTimeString().slice(0, 8); }
  function say(text) { if (stamp) { stamp.hidden = false; stamp.textContent = text; } }
  var updated = new Date();
  function idle() { return Date.now() - lastInput > IDLE; }
  ["keydown", "mousedown", "touchstart", "scroll"].forEach(function (type) {
    window.addEventListener(type, function () {
      var wasIdle = idle();
      lastInput = Date.now();
      if (wasIdle) { refreshLive(); }
    }, { passive: true });
  });
  function refreshLive() {
    var live = document.querySelectorAll("[data-live]");
    if (!live.length) { return; }
    if (idle()) {
      say("Live updates paused at " + clock(new Date()) + ": nothing on this page was touched for 10 minutes. " +
          "Move the mouse or press a key to resume; shown as of " + clock(updated) + ".");
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", redirect: "error",
                                  headers: { "Accept": "text/html", "X-Live-Refresh": "1" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (text) {
        if (!text) { throw new Error("not refreshed"); }
        var doc = new DOMParser().parseFromString(text, "text/html");
        live.forEach(function (el) {
          var fresh = doc.querySelector('[data-live="' + el.getAttribute("data-live") + '"]');
          // Only what changed: an unchanged banner is not announced again, focus stays put.
          if (fresh && fresh.innerHTML !== el.innerHTML) { el.innerHTML = fresh.innerHTML; }
        });
        updated = new Date();
        say("Updated at " + clock(updated) + "; refreshed every 15 s.");
      })
      .catch(function () {
        say("Could not refresh at " + clock(new Date()) + "; shown as of " + clock(updated) + ". Retrying.");
      });
  }
  if (document.querySelector("[data-live]")) {
    say("Updated at " + clock(updated) + "; refreshed every 15 s.");
    window.setInterval(refreshLive, EVERY);
  }

  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var bar = form.querySelector("progress");
      var status = form.querySelector("[data-upload-status]");
      if (!bar || !window.FormData) { return; }
      event.preventDefault();
      bar.hidden = false;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          bar.max = e.total; bar.value = e.loaded;
          if (status) { status.textContent = Math.round(100 * e.loaded / e.total) + " % sent"; }
        }
      });
      xhr.addEventListener("load", function () {
        if (xhr.responseURL && xhr.responseURL !== form.action) { window.location.assign(xhr.responseURL); return; }
        document.open(); document.write(xhr.responseText); document.close();
      });
      xhr.addEventListener("error", function () {
        if (status) { status.textContent = "The upload failed: check the connection and try again."; }
      });
      xhr.send(new FormData(form));
    });
  });
})();
