// The web console's only script: the "Copy" button beside a token shown once, and forms that
// are sent once. Loaded from 'self' (the Content-Security-Policy allows no inline script); the
// pages work without it.
"use strict";

// Each form of a page is sent at most once: where a browser sends both clicks of a double
// click, "Create token" would otherwise make two tokens (Chromium drops the second itself while
// the first is in flight; this does the same wherever the script runs). Every answer to a form
// is a new page, with forms of its own. The button is disabled only after the
// submit event, so that the browser still sends its name and value.
function sendFormsOnce() {
  document.querySelectorAll("form[method='post']").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.hasAttribute("data-sent")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "");
      setTimeout(function () {
        form.querySelectorAll("button[type='submit']").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  });
  // A page the Back button restores from the browser's cache gets its forms back.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      form.removeAttribute("data-sent");
      form.querySelectorAll("button[type='submit']").forEach(function (b) { b.disabled = false; });
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  sendFormsOnce();
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var status = document.getElementById(button.getAttribute("data-status"));
      if (!source) { return; }
      var text = source.textContent.trim();
      var done = function (message) { if (status) { status.textContent = message; } };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done("Copied."); },
          function () { done("Copy failed: select the token and copy it by hand."); });
      } else {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        done(document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.");
      }
    });
  });
});
