// Sequencer's only script of its own: a file, not inline, so the CSP can forbid inline script.
// htmx sends the page's CSRF token (from <meta name="csrf-token">) with every request it makes.
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) {
    event.detail.headers["X-CSRFToken"] = meta.content;
  }
});
