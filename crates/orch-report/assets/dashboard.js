(function () {
  "use strict";
  var root = document.documentElement;
  var list = document.getElementById("phase-list");
  if (!list) { return; }
  var items = Array.prototype.slice.call(list.querySelectorAll("details.phase"));
  var pageSize = parseInt(list.getAttribute("data-page-size"), 10) || 100;
  var filter = document.getElementById("phase-filter");
  var search = document.getElementById("phase-search");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");
  var info = document.getElementById("page-info");
  var page = 0;

  function matches(el) {
    var f = filter.value;
    if (f === "problems" && el.getAttribute("data-problem") !== "1") { return false; }
    if (f !== "all" && f !== "problems" && el.getAttribute("data-class") !== f) { return false; }
    var q = search.value.trim().toLowerCase();
    if (q) {
      var id = el.getAttribute("data-id").toLowerCase();
      var kind = el.getAttribute("data-kind").toLowerCase();
      if (id.indexOf(q) < 0 && kind.indexOf(q) < 0) { return false; }
    }
    return true;
  }

  function shown() { return items.filter(matches); }

  function render() {
    var visible = shown();
    var pages = Math.max(1, Math.ceil(visible.length / pageSize));
    if (page >= pages) { page = pages - 1; }
    if (page < 0) { page = 0; }
    var from = page * pageSize;
    var to = Math.min(visible.length, from + pageSize);
    var on = new Set(visible.slice(from, to));
    for (var i = 0; i < items.length; i++) { items[i].hidden = !on.has(items[i]); }
    info.textContent = visible.length === 0 ? "no phases match"
      : (from + 1) + "\u2013" + to + " of " + visible.length;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  function reveal(id) {
    var el = document.getElementById("phase-" + id);
    if (!el || items.indexOf(el) < 0) { return; }
    if (!matches(el)) { filter.value = "all"; search.value = ""; }
    page = Math.floor(shown().indexOf(el) / pageSize);
    render();
    el.open = true;
    el.scrollIntoView({ block: "start" });
  }

  function fromHash() {
    var h = decodeURIComponent(location.hash || "");
    if (h.indexOf("#phase-") === 0) { reveal(h.slice(7)); }
  }

  filter.addEventListener("change", function () { page = 0; render(); });
  search.addEventListener("input", function () { page = 0; render(); });
  prev.addEventListener("click", function () { page -= 1; render(); });
  next.addEventListener("click", function () { page += 1; render(); });
  window.addEventListener("hashchange", fromHash);

  // Logs are tails: show their end when opened.
  function toBottom(details) {
    var pre = details.querySelector("pre.log-text");
    if (pre) { pre.scrollTop = pre.scrollHeight; }
  }
  Array.prototype.forEach.call(document.querySelectorAll("details.log"), function (d) {
    d.addEventListener("toggle", function () { if (d.open) { toBottom(d); } });
    if (d.open) { toBottom(d); }
  });

  render();
  fromHash();
  root.setAttribute("data-ready", "1");
  window.addEventListener("load", function () {
    root.setAttribute("data-load-ms", String(Math.round(performance.now())));
  });
})();
