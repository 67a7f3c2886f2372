// The SLO pages: the list (/slos) and one SLO (/slos/<name>). Numbers come from
// /api/slos (error ratios the generated recording rules store, burn rates, the
// budget remaining over the compliance window, and the SLO's alerts).
(function () {
  "use strict";
  var el = window.Vigil.el;
  var main = document.getElementById("slos");
  var status = document.getElementById("status");
  var detail = main.getAttribute("data-detail") === "true";
  var REFRESH_MS = 15000;

  function percent(v, digits) {
    return v === null || v === undefined ? "no data" : (v * 100).toFixed(digits) + "%";
  }
  function burn(v) {
    return v === null || v === undefined ? "no data" : v.toFixed(2) + "x";
  }

  function figures(slo, row) {
    var dl = el("dl", { class: "figures" });
    function add(label, value, cls, id) {
      var div = el("div");
      div.appendChild(el("dt", {}, label));
      var attrs = { "data-figure": id };
      if (cls) attrs["class"] = cls;
      div.appendChild(el("dd", attrs, value));
      dl.appendChild(div);
    }
    add("Objective", slo.objective + "% over " + slo.window, "", "objective");
    add("Error budget", percent(slo.error_budget, 2), "", "error-budget");
    var left = row ? row.budget_remaining : null;
    add("Budget remaining (" + slo.window + ")", percent(left, 1),
        left === null ? "" : (left < 0 ? "bad" : "good"), "budget-remaining");
    return dl;
  }

  function burnTable(slo, row) {
    var table = el("table", { class: "burn-rates" });
    var head = el("tr");
    ["Window", "Error ratio", "Burn rate"].forEach(function (h, i) {
      head.appendChild(el("th", i ? { class: "num" } : {}, h));
    });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    row.windows.forEach(function (w) {
      var tr = el("tr", { "data-window": w.window });
      tr.appendChild(el("td", {}, w.window));
      tr.appendChild(el("td", { class: "num" }, percent(w.error_ratio, 3)));
      tr.appendChild(el("td", { class: "num" + (w.burn_rate > 1 ? " bad" : "") }, burn(w.burn_rate)));
      body.appendChild(tr);
    });
    return table;
  }

  function thresholdTable(slo, row) {
    var byWindow = {};
    (row ? row.windows : []).forEach(function (w) { byWindow[w.window] = w.burn_rate; });
    var table = el("table", { class: "thresholds" });
    var head = el("tr");
    ["Alert", "Burn rate above", "Long window", "Short window", "Budget spent", "Now"].forEach(
      function (h) { head.appendChild(el("th", {}, h)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    slo.thresholds.forEach(function (t) {
      var over = byWindow[t.long_window] > t.burn_rate && byWindow[t.short_window] > t.burn_rate;
      var tr = el("tr");
      [t.severity, t.burn_rate + "x", t.long_window, t.short_window,
       percent(t.budget_spent, 0) + " in " + t.long_window,
       over ? "exceeded" : "below"].forEach(function (v, i) {
        tr.appendChild(el("td", i === 5 && over ? { class: "bad" } : {}, v));
      });
      body.appendChild(tr);
    });
    return table;
  }

  function alertList(slo) {
    if (!slo.alerts.length) return el("p", { class: "empty" }, "No alert is pending or firing.");
    var ul = el("ul", { class: "alerts" });
    slo.alerts.forEach(function (a) {
      var li = el("li", { class: a.labels.severity || "" });
      li.appendChild(el("span", { class: "name" }, a.labels.alertname + " "));
      li.appendChild(el("span", {}, a.state + " (" + (a.labels.slo_severity || "") + ") "));
      if (a.annotations.summary) li.appendChild(el("div", {}, a.annotations.summary));
      var since = new Date(a.activeAt * 1000).toLocaleString();
      li.appendChild(el("div", { class: "meta" }, "since " + since));
      if (a.annotations.runbook_url) {
        var href = a.annotations.runbook_url;
        if (!/^[a-z]+:/i.test(href) && href.charAt(0) !== "/") href = "/" + href;
        li.appendChild(el("a", { href: href }, "runbook"));
      }
      ul.appendChild(li);
    });
    return ul;
  }

  function card(slo) {
    var section = el("section", { class: "slo", "data-slo": slo.name });
    var h2 = section.appendChild(el("h2"));
    if (detail) h2.textContent = slo.name;
    else h2.appendChild(el("a", { href: main.getAttribute("data-page") + "/" + encodeURIComponent(slo.name) }, slo.name));
    if (slo.description) section.appendChild(el("p", { class: "description" }, slo.description));
    var rows = slo.series.length ? slo.series : [null];
    rows.forEach(function (row) {
      if (row && Object.keys(row.labels).length) {
        var text = Object.keys(row.labels).map(function (k) { return k + "=" + row.labels[k]; }).join(", ");
        section.appendChild(el("p", { class: "series-labels" }, text));
      }
      section.appendChild(figures(slo, row));
      if (!row) {
        section.appendChild(el("p", { class: "empty" },
          "No recorded error ratio yet: vigil alert records it from the SLO's rules."));
        return;
      }
      section.appendChild(el("h3", {}, "Burn rate per window"));
      section.appendChild(burnTable(slo, row));
    });
    if (detail) {
      section.appendChild(el("h3", {}, "Alerts (multiwindow, multi-burn-rate)"));
      section.appendChild(thresholdTable(slo, slo.series[0]));
    }
    section.appendChild(el("h3", {}, "Pending and firing alerts"));
    section.appendChild(alertList(slo));
    return section;
  }

  function load() {
    window.Vigil.getJSON(main.getAttribute("data-api")).then(function (data) {
      var list = detail ? [data] : data.slos;
      main.replaceChildren.apply(main, list.map(card));
      if (!list.length) main.appendChild(el("p", { class: "empty" }, "No SLOs are defined (alert.slos)."));
      status.className = "status";
      status.textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (err) {
      status.className = "status failed";
      status.textContent = "failed: " + err.message;
    });
  }

  load();
  window.setInterval(load, REFRESH_MS);
})();
