// patchgate admin UI: the only script. Every page works without it; it adds two things:
// 1. live numbers: elements with data-live are refreshed from the same page every 15 s (while
//    someone uses the page; a refresh does not count as session activity);
// 2. upload progress: a form with data-upload shows a progress bar while the file is sent.
"use strict";
(function () {
  // A refresh must not keep an unattended session alive: it says so (the server does not count
  // it as activity), and it stops once nobody has touched the page for 10 minutes.
  var lastInput = Date.now();
  ["keydown", "mousedown", "touchstart", "scroll"].forEach(function (type) {
    window.addEventListener(type, function () { lastInput = Date.now(); }, { passive: true });
  });
  function refreshLive() {
    var live = document.querySelectorAll("[data-live]");
    if (!live.length || Date.now() - lastInput > 10 * 60 * 1000) { return; }
    fetch(window.location.href, { credentials: "same-origin", redirect: "error",
                                  headers: { "Accept": "text/html", "X-Live-Refresh": "1" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        live.forEach(function (el) {
          var fresh = doc.querySelector('[data-live="' + el.getAttribute("data-live") + '"]');
          if (fresh) { el.innerHTML = fresh.innerHTML; }
        });
      })
      .catch(function () { /* keep the numbers we have */ });
  }
  if (document.querySelector("[data-live]")) { window.setInterval(refreshLive, 15000); }

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
