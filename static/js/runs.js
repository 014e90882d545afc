// The run pages' few lines of behaviour that htmx does not cover:
// expanders (aria-expanded + the region they control), local times,
// a visible message when an htmx request fails, and the live log tail
// (kept scrolled to the bottom while the reader is there, and bounded).
(function () {
  "use strict";

  var timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

  function localTimes(root) {
    root.querySelectorAll("time[data-local-time]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = timeFormat.format(when);
      }
      el.removeAttribute("data-local-time");
    });
  }

  function toggle(button) {
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", open ? "true" : "false");
    var region = document.getElementById(button.getAttribute("aria-controls"));
    if (region) {
      region.hidden = !open;
    }
    var label = open ? button.dataset.labelOpen : button.dataset.labelClosed;
    if (label) {
      (button.querySelector("[data-label]") || button).textContent = label;
    }
  }

  function errorBox(elt) {
    var scope = elt && elt.closest ? elt.closest("[data-error-scope]") : null;
    return scope ? { scope: scope, box: scope.querySelector("[data-error-box]") } : null;
  }

  function showError(event, detail) {
    var found = errorBox(event.detail.elt);
    if (!found || !found.box) {
      return;
    }
    found.box.textContent = (found.scope.dataset.errorText || "The request failed") + " (" + detail + "). Try again.";
    found.box.hidden = false;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-expander]");
    if (button) {
      toggle(button);
    }
  });

  // A poll waits while something it would replace is open (data-poll-paused-by names it).
  // htmx trigger filters would need eval, which the CSP forbids (docs/decisions.md#security-headers).
  document.addEventListener("htmx:confirm", function (event) {
    var selector = event.detail.elt.getAttribute("data-poll-paused-by");
    // A poll has no triggering event; an event such as runs:changed still refreshes at once.
    if (selector && !event.detail.triggeringEvent && document.querySelector(selector)) {
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var found = errorBox(event.detail.elt);
    if (found && found.box) {
      found.box.hidden = true;
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showError(event, "HTTP " + xhr.status + (xhr.statusText ? " " + xhr.statusText : ""));
  });
  document.addEventListener("htmx:sendError", function (event) {
    showError(event, "the server could not be reached");
  });
  // The live log keeps at most this many characters on the page (the download has all).
  var LOG_TAIL_CHARS = 400000;
  var logAtBottom = true;

  function isLogTail(elt) {
    return elt && elt.hasAttribute && elt.hasAttribute("data-log-tail");
  }

  function scrollLog(log) {
    log.scrollTop = log.scrollHeight;
  }

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var log = event.detail.target;
    if (isLogTail(log)) {
      logAtBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    }
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var log = event.detail.target;
    if (!isLogTail(log)) {
      return;
    }
    var size = log.textContent.length;
    while (size > LOG_TAIL_CHARS && log.firstElementChild) {
      size -= log.firstElementChild.textContent.length;
      log.removeChild(log.firstElementChild);
    }
    if (logAtBottom) {
      scrollLog(log);
    }
  });
  document.querySelectorAll("[data-log-tail]").forEach(scrollLog);

  document.addEventListener("htmx:load", function (event) {
    localTimes(event.detail.elt);
  });
  localTimes(document);
})();
