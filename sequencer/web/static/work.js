// The work view's keys (listed on the page, #shortcuts) and the live SMS segment count.
// A file, not inline script, so the CSP can forbid inline script; htmx swaps #work, so every
// handler is bound once on the document and reads the current page.
(function () {
  "use strict";

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function showSegments() {
    var body = document.querySelector("textarea[data-segments]");
    if (!body || !window.smsSegments) { return; }
    var out = document.getElementById(body.dataset.segments);
    var s = window.smsSegments(body.value);
    out.textContent = s.count + " segment" + (s.count === 1 ? "" : "s") + " · " + s.units +
      (s.encoding === "GSM-7" ? " GSM-7 characters" : " UCS-2 units (not GSM-7: 70 per text, 67 when split)");
  }

  document.addEventListener("input", function (event) {
    if (event.target.matches("textarea[data-segments]")) { showSegments(); }
  });
  document.addEventListener("DOMContentLoaded", showSegments);
  document.addEventListener("htmx:afterSettle", function () {
    showSegments();
    // After a swap the next task is in place: put the keyboard on its first control.
    var work = document.getElementById("work");
    var first = work && work.querySelector("#dial, #outcome, #subject, #body, #notes, a[autofocus]");
    if (first) { first.focus(); }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var form = document.querySelector("#outcome-form, #send-form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (event.key === "Escape" && typing(event.target)) { event.target.blur(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var outcome = document.getElementById("outcome");
    if (outcome && /^[1-9]$/.test(event.key) && Number(event.key) < outcome.options.length) {
      outcome.selectedIndex = Number(event.key);
      outcome.focus();
      event.preventDefault();
      return;
    }
    if (event.key === "t") { window.location.assign("/"); return; }
    var target = document.querySelector('#work [data-key="' + event.key + '"]');
    if (target) {
      event.preventDefault();
      if (target.matches("input, textarea")) { target.focus(); } else { target.click(); }
    }
  });
})();
