// The Events page, like Kibana's Discover: a KQL query bar, a time picker, a
// histogram of the matches, the fields with their top values, the documents
// newest first. The whole state (query, range, columns) lives in the URL.
// Data from /api/events and /api/events/aggregate; no framework, no build step.
(function () {
  "use strict";

  var QUICK = [["15m", 900], ["1h", 3600], ["24h", 86400], ["7d", 604800]];
  var UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  var PAGE = 50;
  var FIELD_SAMPLE = 60; // at most this many field names in the side list
  var TOP = 5; // top values per field

  var $ = function (id) { return document.getElementById(id); };
  var state = { query: "", from: "now-15m", to: "now", columns: [] };
  var view = { start: 0, end: 0, next: null, chart: null, seq: 0, open: {} };

  var el = Vigil.el, field = Vigil.field, getJSON = Vigil.getJSON;

  // The dotted names of a document's leaf fields ({"a": {"b": 1}} -> ["a.b"]).
  function leaves(doc, prefix, out) {
    Object.keys(doc).forEach(function (k) {
      var v = doc[k], name = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) leaves(v, name, out);
      else out[name] = true;
    });
    return out;
  }

  function display(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // "now", "now-15m", an ISO date or Unix seconds -> Unix seconds (NaN if none of those).
  function resolve(when, now) {
    if (when === "now") return now;
    var rel = /^now-(\d+)([smhdw])$/.exec(when);
    if (rel) return now - Number(rel[1]) * UNITS[rel[2]];
    if (/^\d+(\.\d+)?$/.test(when)) return Number(when);
    return Date.parse(when) / 1000;
  }

  function iso(seconds) { return new Date(seconds * 1000).toISOString(); }

  // A datetime-local input's value for Unix seconds, in the browser's time zone.
  function localInput(seconds) {
    var d = new Date(seconds * 1000);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  }

  function qs(params) {
    return Object.keys(params).filter(function (k) {
      return params[k] !== "" && params[k] !== null && params[k] !== undefined;
    }).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }

  // ---- the URL ----------------------------------------------------------

  function fromURL() {
    var p = new URLSearchParams(location.search);
    state.query = p.get("query") || "";
    state.from = p.get("from") || "now-15m";
    state.to = p.get("to") || "now";
    state.columns = (p.get("columns") || "").split(",").filter(Boolean);
  }

  function toURL(replace) {
    var url = location.pathname + "?" + qs({
      query: state.query, from: state.from, to: state.to, columns: state.columns.join(","),
    });
    if (url === location.pathname + location.search) return;
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }

  // ---- the search -------------------------------------------------------

  function base() {
    return { query: state.query, start: view.start, end: view.end };
  }

  function showError(err) {
    var box = $("query-error");
    if (!err) { box.hidden = true; box.textContent = ""; return; }
    var text = err.message;
    if (err.column) {
      // The query, and a caret under the column the parser names (1-based).
      text = state.query + "\n" + " ".repeat(Math.max(0, err.column - 1)) + "^\n" + err.message;
    }
    box.textContent = text;
    box.hidden = false;
  }

  function status(text, failed) {
    $("status").textContent = text;
    $("status").className = failed ? "status failed" : "status";
  }

  function run() {
    var now = Date.now() / 1000;
    var start = resolve(state.from, now), end = resolve(state.to, now);
    $("query").value = state.query;
    markQuick();
    if (!isFinite(start) || !isFinite(end) || end <= start) {
      showError(new Error("the time range is not valid: 'from' must be before 'to'"));
      return;
    }
    view.start = start;
    view.end = end;
    $("from").value = localInput(start);
    $("to").value = localInput(end);
    updateExport();
    var seq = ++view.seq; // answers to an older search are dropped
    status("searching…");
    var agg = getJSON("api/events/aggregate?" + qs(base()));
    var docs = getJSON("api/events?" + qs(Object.assign(base(), { limit: PAGE })));
    Promise.all([agg, docs]).then(function (rv) {
      if (seq !== view.seq) return;
      showError(null);
      $("hits").textContent = rv[0].total.toLocaleString();
      drawHistogram(rv[0].histogram);
      view.open = {};
      $("docs-body").replaceChildren();
      renderHead();
      appendRows(rv[1].events);
      view.next = rv[1].next;
      $("more").hidden = !view.next;
      $("empty").hidden = rv[1].events.length > 0;
      renderFields(rv[1].events);
      status("updated " + new Date().toLocaleTimeString());
    }, function (err) {
      if (seq !== view.seq) return;
      showError(err);
      status("search failed", true);
    });
  }

  function search(replace) { toURL(replace); run(); }

  function loadMore() {
    if (!view.next) return;
    var seq = view.seq;
    $("more").disabled = true;
    getJSON("api/events?" + qs(Object.assign(base(), { limit: PAGE, after: view.next })))
      .then(function (d) {
        if (seq !== view.seq) return;
        appendRows(d.events);
        view.next = d.next;
        $("more").hidden = !view.next;
      }, function (err) { status("cannot load more: " + err.message, true); })
      .finally(function () { $("more").disabled = false; });
  }

  // ---- the histogram ----------------------------------------------------

  function drawHistogram(h) {
    var box = $("histogram");
    var xs = h.buckets.map(function (b) { return b[0]; });
    var ys = h.buckets.map(function (b) { return b[1]; });
    if (view.chart) view.chart.destroy();
    var width = Math.max(box.clientWidth, 300);
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.9, 40], align: 1 }) : null;
    view.chart = new uPlot({
      width: width, height: 160,
      cursor: { drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: true, range: function () { return [view.start, view.end]; } },
                y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
      axes: [{ space: 70 }, { size: 50, values: function (u, vals) {
        // Counts are whole numbers: no tick at 0.5.
        return vals.map(function (v) { return Number.isInteger(v) ? String(v) : ""; });
      } }],
      legend: { show: false },
      series: [{}, { label: "events", stroke: "#1f77b4", fill: "rgba(31,119,180,.5)",
                     width: 1, paths: bars, points: { show: false } }],
      hooks: {
        // Dragging across the chart zooms the time range to the selection.
        setSelect: [function (u) {
          if (u.select.width < 2) return;
          var lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          state.from = iso(Math.floor(lo));
          state.to = iso(Math.ceil(hi));
          search(false);
        }],
      },
    }, [xs, ys], box);
    box.setAttribute("data-buckets", String(xs.length));
    box.setAttribute("data-total", String(ys.reduce(function (a, b) { return a + b; }, 0)));
  }

  // ---- fields -----------------------------------------------------------

  function renderFields(events) {
    var names = {};
    events.forEach(function (e) { leaves(e.doc, "", names); });
    var list = $("field-list");
    list.replaceChildren();
    Object.keys(names).sort().slice(0, FIELD_SAMPLE).forEach(function (name) {
      var item = list.appendChild(el("li", { "data-field": name }));
      var row = item.appendChild(el("div", { class: "field-row" }));
      var toggle = row.appendChild(el("button", { type: "button", class: "field-name",
                                                  "aria-expanded": "false" }, name));
      var chosen = state.columns.indexOf(name) >= 0;
      var col = row.appendChild(el("button", { type: "button", class: "field-col",
                                               title: (chosen ? "remove column " : "add column ") + name },
                                   chosen ? "remove" : "add"));
      col.addEventListener("click", function () { toggleColumn(name); });
      var values = item.appendChild(el("ul", { class: "top-values", hidden: "" }));
      toggle.addEventListener("click", function () {
        var open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        values.hidden = !open;
        if (open) topValues(name, values);
      });
    });
  }

  function topValues(name, list) {
    list.replaceChildren(el("li", { class: "empty" }, "loading…"));
    getJSON("api/events/aggregate?" + qs(Object.assign(base(), { terms: name, size: TOP })))
      .then(function (d) {
        list.replaceChildren();
        var total = d.total || 1;
        d.terms.buckets.forEach(function (b) {
          var item = list.appendChild(el("li", { class: "top-value", "data-value": display(b.value) }));
          item.appendChild(el("span", { class: "value" }, display(b.value)));
          item.appendChild(el("span", { class: "count" },
                              b.count + " (" + Math.round(100 * b.count / total) + "%)"));
          var plus = item.appendChild(el("button", { type: "button", class: "filter-in",
                                                     title: "filter for this value" }, "+"));
          var minus = item.appendChild(el("button", { type: "button", class: "filter-out",
                                                      title: "filter out this value" }, "−"));
          plus.addEventListener("click", function () { addFilter(name, b.value, false); });
          minus.addEventListener("click", function () { addFilter(name, b.value, true); });
        });
        if (!d.terms.buckets.length) list.appendChild(el("li", { class: "empty" }, "no values"));
      }, function (err) {
        list.replaceChildren(el("li", { class: "error" }, err.message));
      });
  }

  function kqlValue(value) {
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return '"' + String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  }

  function addFilter(name, value, negate) {
    var clause = (negate ? "not " : "") + name + ": " + kqlValue(value);
    var q = state.query.trim();
    state.query = q ? "(" + q + ") and " + clause : clause;
    search(false);
  }

  function toggleColumn(name) {
    var i = state.columns.indexOf(name);
    if (i >= 0) state.columns.splice(i, 1);
    else state.columns.push(name);
    search(false);
  }

  // ---- documents --------------------------------------------------------

  function renderHead() {
    var head = $("docs-head");
    head.replaceChildren(el("th", { scope: "col", class: "expand" }), el("th", { scope: "col" }, "Time"));
    if (!state.columns.length) head.appendChild(el("th", { scope: "col" }, "Document"));
    state.columns.forEach(function (c) {
      var th = head.appendChild(el("th", { scope: "col", "data-col": c }, c + " "));
      var x = th.appendChild(el("button", { type: "button", class: "remove-col",
                                            title: "remove column " + c }, "×"));
      x.addEventListener("click", function () { toggleColumn(c); });
    });
  }

  function summary(e) {
    var msg = field(e.doc, "message");
    var text = e.dataset + " · " + (msg === undefined ? JSON.stringify(e.doc) : display(msg));
    return text.length > 300 ? text.slice(0, 300) + "…" : text;
  }

  function appendRows(events) {
    var body = $("docs-body");
    var span = 2 + Math.max(1, state.columns.length);
    events.forEach(function (e) {
      var row = body.appendChild(el("tr", { class: "doc", "data-id": e.id }));
      var cell = row.appendChild(el("td", { class: "expand" }));
      var btn = cell.appendChild(el("button", { type: "button", "aria-expanded": "false",
                                                title: "show the document" }, "▸"));
      row.appendChild(el("td", { class: "time" }, new Date(e.timestamp * 1000).toISOString()));
      if (!state.columns.length) row.appendChild(el("td", { class: "summary" }, summary(e)));
      state.columns.forEach(function (c) {
        row.appendChild(el("td", { "data-col": c }, display(field(e.doc, c))));
      });
      var detail = el("tr", { class: "detail", hidden: "" });
      var td = detail.appendChild(el("td", { colspan: String(span) }));
      td.appendChild(el("pre", { class: "json" }, JSON.stringify(e.doc, null, 2)));
      body.appendChild(detail);
      btn.addEventListener("click", function () {
        var open = btn.getAttribute("aria-expanded") !== "true";
        btn.setAttribute("aria-expanded", String(open));
        btn.textContent = open ? "▾" : "▸";
        detail.hidden = !open;
      });
    });
  }

  // ---- controls ---------------------------------------------------------

  function updateExport() {
    ["ndjson", "csv"].forEach(function (fmt) {
      var params = Object.assign(base(), { format: fmt });
      if (fmt === "csv" && state.columns.length) params.fields = ["@timestamp"].concat(state.columns).join(",");
      $("export-" + fmt).setAttribute("href", "api/events/export?" + qs(params));
    });
  }

  function markQuick() {
    $("quick-ranges").querySelectorAll("button").forEach(function (b) {
      var on = state.to === "now" && state.from === "now-" + b.getAttribute("data-range");
      b.setAttribute("aria-pressed", String(on));
    });
  }

  function buildControls() {
    var quick = $("quick-ranges");
    QUICK.forEach(function (r) {
      var b = quick.appendChild(el("button", { type: "button", "data-range": r[0],
                                               "aria-pressed": "false" }, r[0]));
      b.addEventListener("click", function () {
        state.from = "now-" + r[0];
        state.to = "now";
        state.query = $("query").value;
        search(false);
      });
    });
    var dirty = false;
    ["from", "to"].forEach(function (id) {
      $(id).addEventListener("change", function () { dirty = true; });
    });
    // Enter in the query bar submits the form: the search runs.
    $("search").addEventListener("submit", function (ev) {
      ev.preventDefault();
      state.query = $("query").value;
      if (dirty) {
        var a = new Date($("from").value).getTime() / 1000, b = new Date($("to").value).getTime() / 1000;
        if (isFinite(a) && isFinite(b)) { state.from = iso(a); state.to = iso(b); }
        dirty = false;
      }
      search(false);
    });
    $("more").addEventListener("click", loadMore);
    window.addEventListener("popstate", function () { fromURL(); run(); });
  }

  buildControls();
  fromURL();
  run();
})();
