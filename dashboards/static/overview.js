// The overview dashboard: panels from /api/overview, data from the JSON API,
// charts by uPlot, refreshed every few seconds. No framework, no build step.
(function () {
  "use strict";

  var RANGES = { "15m": 900, "1h": 3600, "6h": 21600 };
  var POINTS = 180; // points per series: step = range / POINTS, at least 5 s
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

  var state = { config: null, range: "15m", panels: [], markers: [], timer: null };
  var root = document.getElementById("panels");
  var statusLine = document.getElementById("status");

  var el = Vigil.el, field = Vigil.field, getJSON = Vigil.getJSON;

  function query(path, params) {
    var qs = Object.keys(params).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
    return getJSON("api/" + path + "?" + qs);
  }

  function formatter(unit) {
    if (unit === "ratio") return function (v) { return (v * 100).toFixed(v < 0.1 ? 2 : 1) + "%"; };
    if (unit === "seconds") {
      return function (v) { return v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s"; };
    }
    if (unit === "reqps") return function (v) { return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + "/s"; };
    return function (v) { return String(+v.toFixed(3)); };
  }

  function seriesName(panel, metric) {
    var parts = panel.legend.map(function (l) { return metric[l] || "—"; });
    if (parts.length) return parts.join(" ");
    var labels = Object.keys(metric).filter(function (k) { return k !== "__name__"; });
    return labels.length ? labels.map(function (k) { return k + "=" + metric[k]; }).join(", ")
                         : panel.title;
  }

  // Draws a dashed vertical line and its text at each deploy marker.
  function markersPlugin() {
    return {
      hooks: {
        draw: function (u) {
          var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
          ctx.save();
          ctx.strokeStyle = "#6a1b9a";
          ctx.fillStyle = "#6a1b9a";
          ctx.setLineDash([5, 4]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.font = (11 * devicePixelRatio) + "px sans-serif";
          state.markers.forEach(function (m) {
            var x = Math.round(u.valToPos(m.time, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.fillText(m.text, x + 4 * devicePixelRatio, top + 12 * devicePixelRatio);
          });
          ctx.restore();
        },
      },
    };
  }

  function chartSize(box) {
    var width = Math.max(box.clientWidth, 200);
    return { width: width, height: Math.max(180, Math.min(300, Math.round(width * 0.5))) };
  }

  function renderSeries(view, result, start, end) {
    var panel = view.panel;
    // The x axis spans the chosen range (15m, 1h…), not just the data there is.
    view.start = start;
    view.end = end;
    if (!result.length) {
      if (view.chart) { view.chart.destroy(); view.chart = null; view.key = ""; }
      view.note.textContent = "no data in this range";
      return;
    }
    view.note.textContent = "";
    var times = {};
    result.forEach(function (s) { s.values.forEach(function (p) { times[p[0]] = true; }); });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (t, i) { index[t] = i; });
    var data = [xs];
    result.forEach(function (s) {
      var ys = xs.map(function () { return null; });
      s.values.forEach(function (p) {
        var v = parseFloat(p[1]);
        ys[index[p[0]]] = isFinite(v) ? v : null;
      });
      data.push(ys);
    });
    var names = result.map(function (s) { return seriesName(panel, s.metric); });
    var key = names.join("\u0000");
    if (view.chart && view.key === key) {
      view.chart.setData(data);
      return;
    }
    if (view.chart) view.chart.destroy();
    var fmt = formatter(panel.unit);
    var opts = chartSize(view.box);
    opts.plugins = [markersPlugin()];
    opts.scales = { x: { time: true, range: function () { return [view.start, view.end]; } }, y: { range: function (u, lo, hi) { return [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1]; } } };
    opts.axes = [{ space: 70 }, { size: 60, values: function (u, vals) { return vals.map(fmt); } }];
    opts.series = [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: COLORS[i % COLORS.length], width: 1.5,
               value: function (u, v) { return v == null ? "—" : fmt(v); } };
    }));
    view.chart = new uPlot(opts, data, view.box);
    view.key = key;
  }

  function renderTable(view, result) {
    var cols = view.panel.columns;
    var table = el("table");
    var head = el("tr");
    cols.forEach(function (c) { head.appendChild(el("th", { scope: "col" }, c)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    result.slice().sort(function (a, b) {
      return JSON.stringify(a.metric) < JSON.stringify(b.metric) ? -1 : 1;
    }).forEach(function (s) {
      var row = body.appendChild(el("tr"));
      cols.forEach(function (c) {
        var text = c === "value" ? s.value[1] : (s.metric[c] || "");
        var cell = row.appendChild(el("td", { "data-col": c }, text));
        if (c === "value" && view.panel.expr === "up") cell.className = "up-" + text;
      });
    });
    view.body.replaceChildren(table);
    view.note.textContent = result.length ? "" : "no data";
  }

  function renderAlerts(view, alerts) {
    var list = el("ul", { class: "alerts" });
    alerts.forEach(function (a) {
      var item = list.appendChild(el("li", { class: a.labels.severity || "" }));
      item.appendChild(el("span", { class: "name" }, a.labels.alertname || "(unnamed)"));
      var summary = a.summary || a.annotations.summary || "";
      if (summary) item.appendChild(el("div", { class: "summary" }, summary));
      var meta = Object.keys(a.labels).filter(function (k) { return k !== "alertname"; })
        .map(function (k) { return k + "=" + a.labels[k]; });
      meta.push("since " + new Date(a.activeAt * 1000).toLocaleTimeString());
      if (a.value) meta.push("value " + a.value);
      item.appendChild(el("div", { class: "meta" }, meta.join(" · ")));
      if (a.annotations.runbook_url) {
        var link = el("a", { href: a.annotations.runbook_url }, "runbook");
        item.appendChild(el("div", { class: "meta" })).appendChild(link);
      }
    });
    view.body.replaceChildren(list);
    view.note.textContent = alerts.length ? "" : "no alerts firing";
  }

  function refreshPanel(view, start, end, step) {
    var panel = view.panel;
    var done;
    if (panel.kind === "timeseries") {
      done = query("query_range", { expr: panel.expr, start: start, end: end, step: step })
        .then(function (d) { renderSeries(view, d.result, start, end); });
    } else if (panel.kind === "table") {
      done = query("query", { expr: panel.expr, time: end })
        .then(function (d) { renderTable(view, d.result); });
    } else {
      done = getJSON("api/alerts").then(function (d) { renderAlerts(view, d.alerts); });
    }
    return done.then(function () { view.error.textContent = ""; }, function (err) {
      view.error.textContent = err.message;
      throw err;
    });
  }

  function refreshMarkers(start, end) {
    var m = state.config.markers;
    return query("events", { dataset: m.dataset, start: start, end: end, limit: 100 })
      .then(function (d) {
        state.markers = d.events.map(function (e) {
          var value = field(e.doc, m.field);
          return { time: e.timestamp, text: value == null ? e.dataset : m.prefix + value };
        });
      }, function () { state.markers = []; });
  }

  function refresh() {
    clearTimeout(state.timer);
    var end = Date.now() / 1000;
    var span = RANGES[state.range];
    var start = end - span;
    var step = Math.max(5, Math.round(span / POINTS));
    refreshMarkers(start, end).then(function () {
      return Promise.allSettled(state.panels.map(function (v) {
        return refreshPanel(v, start, end, step);
      }));
    }).then(function (results) {
      var failed = results.filter(function (r) { return r.status === "rejected"; }).length;
      statusLine.textContent = (failed ? failed + " panel(s) failed · " : "") +
        "updated " + new Date().toLocaleTimeString();
      statusLine.className = failed ? "status failed" : "status";
    }).finally(function () {
      state.timer = setTimeout(refresh, state.config.refresh_s * 1000);
    });
  }

  function buildRanges() {
    var nav = document.getElementById("ranges");
    state.config.ranges.forEach(function (r) {
      var b = el("button", { type: "button", "data-range": r, "aria-pressed": String(r === state.range) }, r);
      b.addEventListener("click", function () {
        state.range = r;
        nav.querySelectorAll("button").forEach(function (x) {
          x.setAttribute("aria-pressed", String(x === b));
        });
        refresh();
      });
      nav.appendChild(b);
    });
  }

  function buildPanels() {
    state.config.panels.forEach(function (panel) {
      var section = el("section", { class: "panel panel-" + panel.kind, id: "panel-" + panel.id,
                                    "aria-labelledby": "h-" + panel.id });
      section.appendChild(el("h2", { id: "h-" + panel.id }, panel.title));
      if (panel.expr) section.appendChild(el("p", { class: "expr" }, panel.expr));
      var view = { panel: panel, chart: null, key: "" };
      view.error = section.appendChild(el("p", { class: "error", role: "alert" }));
      view.note = section.appendChild(el("p", { class: "empty" }));
      view.body = view.box = section.appendChild(el("div", { class: panel.kind === "timeseries" ? "chart" : "body" }));
      root.appendChild(section);
      state.panels.push(view);
      if (panel.kind === "timeseries" && window.ResizeObserver) {
        new ResizeObserver(function () {
          if (view.chart) view.chart.setSize(chartSize(view.box));
        }).observe(view.box);
      }
    });
  }

  getJSON(root.getAttribute("data-overview")).then(function (config) {
    state.config = config;
    document.getElementById("title").textContent = config.title;
    var wanted = new URLSearchParams(location.search).get("range");
    if (wanted && RANGES[wanted]) state.range = wanted;
    buildRanges();
    buildPanels();
    refresh();
  }, function (err) {
    statusLine.textContent = "cannot load the dashboard: " + err.message;
    statusLine.className = "status failed";
  });
})();
