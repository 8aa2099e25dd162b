// cvdeploy console: refresh the page's <main> in place every data-refresh seconds (no reload, no
// libraries). Pauses while the tab is hidden or a <details> is open; stops after a failed fetch.
(function () {
  "use strict";
  var every = Number((document.getElementById("main") || {}).dataset ? document.getElementById("main").dataset.refresh : 0);
  if (!every || !window.fetch || !window.DOMParser) { return; }
  var timer = window.setInterval(function () {
    var main = document.getElementById("main");
    if (document.hidden || !main || main.querySelector("details[open]")) { return; }
    window.fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (fresh) { main.replaceWith(fresh); }
      })
      .catch(function () { window.clearInterval(timer); });
  }, every * 1000);
}());
