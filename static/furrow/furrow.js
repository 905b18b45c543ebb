// Furrow's pages: what htmx attributes cannot say alone. Every page works without this file;
// with it, the run page follows its event stream (the graph and steps redraw) and its log stream.
(function () {
  "use strict";

  var csrf = function () {
    var meta = document.querySelector('meta[name="furrow-csrf"]');
    return meta ? meta.content : "";
  };

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRFToken"] = csrf();
  });

  // A part refreshed after the session expired comes back as the login page: show it whole.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && url.indexOf("/admin/login/") !== -1) {
      event.detail.shouldSwap = false;
      window.location.reload();
    }
  });

  // A form with data-confirm asks first (cancel a run, roll back a workflow).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // Every event type a run's stream sends; one missed here only delays a redraw to the next one.
  var RUN_EVENTS = [
    "run.queued", "run.running", "run.paused", "run.resumed", "run.succeeded", "run.failed",
    "run.cancelled", "run.rerun", "run.expired",
    "step.ready", "step.running", "step.waiting", "step.retrying", "step.succeeded", "step.failed",
    "step.skipped", "step.cancelled", "step.reset", "step.reused", "step.deferred", "step.callback",
    "step.hook", "step.dead_lettered", "step.dead_letter_discarded", "step.lost", "step.items",
    "step.item_succeeded", "step.item_failed",
    "approval.requested", "approval.decided", "approval.expired"
  ];

  function followRun(page) {
    var timer = null;
    var redraw = function () {
      if (timer) { return; }
      timer = window.setTimeout(function () {
        timer = null;
        document.body.dispatchEvent(new CustomEvent("furrow:run-changed"));
      }, 250);
    };
    var source = new EventSource(page.dataset.events);
    RUN_EVENTS.forEach(function (name) { source.addEventListener(name, redraw); });
    source.addEventListener("end", function () { redraw(); source.close(); });
    // A safety net for an event type not listed above, and for a stream that broke.
    var fallback = window.setInterval(function () {
      var live = document.getElementById("run-live");
      if (live && live.dataset.final === "true" && source.readyState === EventSource.CLOSED) {
        window.clearInterval(fallback);
        return;
      }
      redraw();
    }, 10000);
  }

  var MAX_LINES = 5000;

  function followLogs(view) {
    var after = view.dataset.after || "0";
    var follow = document.getElementById("log-follow");
    var stepFilter = document.getElementById("log-step");
    var streamFilter = document.getElementById("log-stream");
    var search = document.getElementById("log-search");
    var pending = [];
    var scheduled = false;

    var atBottom = function () {
      return view.scrollHeight - view.scrollTop - view.clientHeight < 24;
    };
    var matches = function (line) {
      if (stepFilter.value && line.dataset.step !== stepFilter.value) { return false; }
      if (streamFilter.value && line.dataset.stream !== streamFilter.value) { return false; }
      var needle = search.value.trim().toLowerCase();
      return !needle || line.textContent.toLowerCase().indexOf(needle) !== -1;
    };
    var applyFilters = function () {
      Array.prototype.forEach.call(view.querySelectorAll(".line"), function (line) {
        line.hidden = !matches(line);
      });
      if (follow.checked) { view.scrollTop = view.scrollHeight; }
    };
    [stepFilter, streamFilter].forEach(function (el) { el.addEventListener("change", applyFilters); });
    search.addEventListener("input", applyFilters);
    follow.addEventListener("change", function () {
      if (follow.checked) { view.scrollTop = view.scrollHeight; }
    });
    // Scrolling up stops following; scrolling back to the end follows again.
    view.addEventListener("scroll", function () { follow.checked = atBottom(); });

    var flush = function () {
      scheduled = false;
      var empty = view.querySelector(".empty");
      if (empty) { empty.remove(); }
      var fragment = document.createDocumentFragment();
      pending.forEach(function (row) {
        var line = document.createElement("div");
        line.className = "line " + row.stream;
        line.dataset.step = row.step || "";
        line.dataset.stream = row.stream;
        var step = document.createElement("span");
        step.className = "step";
        step.textContent = row.step || "";
        var text = document.createElement("span");
        text.className = "text";
        text.textContent = row.text;
        line.appendChild(step);
        line.appendChild(text);
        line.hidden = !matches(line);
        fragment.appendChild(line);
      });
      pending = [];
      view.appendChild(fragment);
      var extra = view.children.length - MAX_LINES;
      for (var i = 0; i < extra; i++) { view.removeChild(view.firstChild); }
      if (follow.checked) { view.scrollTop = view.scrollHeight; }
    };

    var source = new EventSource(view.dataset.stream + "?after=" + encodeURIComponent(after));
    source.addEventListener("log", function (message) {
      pending.push(JSON.parse(message.data));
      if (!scheduled) {
        scheduled = true;
        window.requestAnimationFrame(flush);
      }
    });
    source.addEventListener("end", function () { source.close(); });
    view.scrollTop = view.scrollHeight;
  }

  // Step names in the table and boxes in the graph open the step's details beside them.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-panel], svg.furrow-graph a");
    var panel = document.getElementById("step-panel");
    if (!link || !panel || !window.htmx) { return; }
    event.preventDefault();
    var href = link.getAttribute("href") || link.getAttribute("xlink:href");
    window.htmx.ajax("GET", href, { target: "#step-panel", swap: "innerHTML" }).then(function () {
      panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.getElementById("run-page");
    if (page && window.EventSource) {
      var live = document.getElementById("run-live");
      if (!(live && live.dataset.final === "true")) { followRun(page); }
      var view = document.getElementById("log-view");
      if (view) { followLogs(view); }
    }
  });
})();
