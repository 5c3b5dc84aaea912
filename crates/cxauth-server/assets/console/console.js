// The web console's only script: the "Copy" button beside a token shown once. Loaded from
// 'self' (the Content-Security-Policy allows no inline script); the page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
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
