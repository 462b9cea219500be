(function () {
  "use strict";
  var root = document.documentElement;
  var list = document.getElementById("phase-list");
  if (!list) { return; }
  var pageSize = parseInt(list.getAttribute("data-page-size"), 10) || 100;
  var filter = document.getElementById("phase-filter");
  var search = document.getElementById("phase-search");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");
  var info = document.getElementById("page-info");
  var page = 0;

  // A large run comes as data (one row per phase, see `PhaseRow` in html.rs): the list
  // holds one page of elements at a time, made when first shown, and the timeline is drawn
  // from the same rows. A small run comes as markup, and pages hide what they do not show.
  var data = document.getElementById("phase-data");
  var entries;
  if (data) {
    entries = JSON.parse(data.textContent).map(function (r) {
      return {
        id: r[0], kind: r[1], cls: r[2], row: r,
        problem: r[2] !== "succeeded" && r[2] !== "skipped",
        el: r[12] ? document.getElementById("phase-" + r[0]) : null
      };
    });
    drawTimeline(entries);
  } else {
    entries = Array.prototype.slice.call(list.querySelectorAll("details.phase")).map(function (el) {
      return {
        id: el.getAttribute("data-id"), kind: el.getAttribute("data-kind"),
        cls: el.getAttribute("data-class"), problem: el.getAttribute("data-problem") === "1",
        el: el
      };
    });
  }
  var byId = {};
  entries.forEach(function (e) { byId[e.id] = e; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) { continue; }
      parent.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return parent;
  }

  function link(id, child) {
    var a = el("a");
    a.href = "#phase-" + id;
    add(a, child);
    return a;
  }

  // The element of a phase given as a row, as the template would have made it.
  function build(r) {
    var id = r[0], cls = r[2], label = r[3], attempts = r[4], retries = Math.max(0, attempts - 1);
    var d = el("details", "phase s-" + cls);
    d.id = "phase-" + id;
    d.setAttribute("data-id", id);
    d.setAttribute("data-kind", r[1]);
    d.setAttribute("data-status", r[18]);
    d.setAttribute("data-class", cls);
    d.setAttribute("data-problem", cls !== "succeeded" && cls !== "skipped" ? "1" : "0");
    var s = add(el("summary"), el("span", "badge s-" + cls, label), " ", el("code", "pid", id), " ",
      el("span", "kind", r[1]));
    if (r[6]) { add(s, " ", el("span", "dur", r[6])); }
    if (retries) {
      var rt = el("span", "retry", "\u21bb" + retries);
      rt.title = attempts + " attempts";
      add(s, " ", rt);
    }
    if (r[7]) { add(s, " ", el("span", "reason", r[7])); }
    var facts = el("dl", "facts small");
    function fact(name, value) {
      if (value === null || value === undefined) { return; }
      var dd = el("dd");
      add(dd, value);
      add(facts, add(el("div"), el("dt", null, name), dd));
    }
    fact("Attempts", String(attempts));
    fact("Exit code", r[5] === null ? null : String(r[5]));
    fact("Started", r[13]);
    fact("Finished", r[14]);
    if (r[19]) { fact("Log", el("code", null, r[19])); }
    if (r[8].length) {
      var needs = el("span");
      r[8].forEach(function (n) { add(needs, link(n, el("code", null, n)), " "); });
      fact("Needs", needs);
    }
    if (r[15].length) {
      var tags = el("span");
      r[15].forEach(function (t) { add(tags, el("span", "tag", t), " "); });
      fact("Tags", tags);
    }
    var body = add(el("div", "phase-body"), facts);
    if (r[17]) { add(body, el("p", "description", r[17])); }
    if (r[7]) { add(body, add(el("p", "reason-full"), el("strong", null, "Reason:"), " " + r[7])); }
    if (r[16].length) {
      var tbody = el("tbody");
      r[16].forEach(function (kv) {
        var th = add(el("th"), el("code", null, kv[0]));
        th.scope = "row";
        add(tbody, add(el("tr"), th, add(el("td"), el("code", "wrap", kv[1]))));
      });
      var head = add(el("thead"), add(el("tr"), el("th", null, "Output"), el("th", null, "Value")));
      add(body, el("h4", null, "Outputs"), add(el("table", "kv"), head, tbody));
    }
    return add(d, s, body);
  }

  function drawTimeline(all) {
    var tl = document.getElementById("timeline-rows");
    if (!tl) { return; }
    var frag = document.createDocumentFragment();
    all.forEach(function (e) {
      var r = e.row, attempts = r[4], retries = Math.max(0, attempts - 1);
      var bar = el("a", "tl-bar s-" + r[2] + (r[11] ? "" : " notrun") + (retries ? " retried" : ""));
      bar.href = "#phase-" + r[0];
      bar.setAttribute("data-phase", r[0]);
      bar.style.left = r[9] + "%";
      bar.style.width = r[10] + "%";
      bar.title = r[0] + ": " + r[3] + (r[6] ? ", " + r[6] : "") + (retries ? ", " + attempts + " attempts" : "");
      if (retries) { add(bar, el("span", "retry", "\u21bb" + retries)); }
      if (!r[11]) { add(bar, el("span", "notrun-label", r[3])); }
      frag.appendChild(add(el("div", "tl-row"), add(el("div", "tl-track"), bar)));
    });
    tl.appendChild(frag);
  }

  function matches(e) {
    var f = filter.value;
    if (f === "problems" && !e.problem) { return false; }
    if (f !== "all" && f !== "problems" && e.cls !== f) { return false; }
    var q = search.value.trim().toLowerCase();
    if (q && e.id.toLowerCase().indexOf(q) < 0 && e.kind.toLowerCase().indexOf(q) < 0) {
      return false;
    }
    return true;
  }

  function shown() { return entries.filter(matches); }

  function render() {
    var visible = shown();
    var pages = Math.max(1, Math.ceil(visible.length / pageSize));
    if (page >= pages) { page = pages - 1; }
    if (page < 0) { page = 0; }
    var from = page * pageSize;
    var to = Math.min(visible.length, from + pageSize);
    var on = visible.slice(from, to);
    if (data) {
      var frag = document.createDocumentFragment();
      on.forEach(function (e) {
        if (!e.el) { e.el = build(e.row); }
        frag.appendChild(e.el);
      });
      list.textContent = "";
      list.appendChild(frag);
    } else {
      var set = new Set(on);
      for (var i = 0; i < entries.length; i++) { entries[i].el.hidden = !set.has(entries[i]); }
    }
    info.textContent = visible.length === 0 ? "no phases match"
      : (from + 1) + "\u2013" + to + " of " + visible.length;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  function reveal(id) {
    var e = byId[id];
    if (!e) { return; }
    if (!matches(e)) { filter.value = "all"; search.value = ""; }
    page = Math.floor(shown().indexOf(e) / pageSize);
    render();
    e.el.open = true;
    e.el.scrollIntoView({ block: "start" });
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
