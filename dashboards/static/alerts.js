// The Alerts page: alert groups as the alert manager groups them (/api/alerts/groups),
// each with its alerts' states, acknowledgement and history (the current incident, earlier
// ones folded), the recently resolved incidents, and the silences
// (/api/silences) with a form to create one and a button to expire one.
(function () {
  "use strict";
  var V = window.Vigil, el = V.el;
  var main = document.getElementById("alerts-page");
  var status = document.getElementById("status");
  var groupsBox = document.getElementById("groups");
  var filterForm = document.getElementById("filter-form");
  var filterInput = document.getElementById("filter");
  var filterError = document.getElementById("filter-error");
  var silenceForm = document.getElementById("silence-form");
  var silenceBody = document.querySelector("#silence-list tbody");
  var csrf = main.getAttribute("data-csrf");
  var canChange = main.getAttribute("data-can-change") === "true";
  var REFRESH_MS = 15000;
  var openHistory = {};
  var lastGroups = null;

  function when(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }
  function show(node, text) { node.textContent = text || ""; node.hidden = !text; }

  function labelList(labels, cls) {
    var ul = el("ul", { class: cls || "labels" });
    Object.keys(labels).forEach(function (k) {
      ul.appendChild(el("li", {}, k + "=" + labels[k]));
    });
    return ul;
  }

  function failed(err) {
    status.className = "status failed";
    status.textContent = "failed: " + err.message;
  }

  function flags(a) {
    var span = el("span", { class: "flags" });
    if (a.silencedBy.length) span.appendChild(el("span", { class: "flag silenced", title: a.silencedBy.join(", ") }, "silenced"));
    if (a.inhibitedBy.length) span.appendChild(el("span", { class: "flag inhibited", title: "by " + a.inhibitedBy.join(", ") }, "inhibited"));
    if (a.acknowledged && a.acknowledged.holds) {
      span.appendChild(el("span", { class: "flag acknowledged" }, "acknowledged by " + a.acknowledged.by));
    }
    return span;
  }

  function visible(a) {
    if (a.silencedBy.length && !document.getElementById("show-silenced").checked) return false;
    if (a.inhibitedBy.length && !document.getElementById("show-inhibited").checked) return false;
    if (a.acknowledged && a.acknowledged.holds && !document.getElementById("show-acknowledged").checked) return false;
    return true;
  }

  function alertItem(g, a) {
    var li = el("li", { class: "alert " + a.status, "data-fingerprint": a.fingerprint, "data-state": a.state });
    var head = li.appendChild(el("div", { class: "alert-head" }));
    head.appendChild(el("span", { class: "state " + a.state }, a.state));
    head.appendChild(el("strong", {}, a.labels.alertname || a.fingerprint));
    head.appendChild(flags(a));
    if (canChange && a.state !== "resolved") {
      var b = head.appendChild(el("button", { type: "button", class: "silence-this" }, "Silence"));
      b.addEventListener("click", function () { prefill(a); });
    }
    var rest = {};
    Object.keys(a.labels).forEach(function (k) { if (!(k in g.labels) && k !== "alertname") rest[k] = a.labels[k]; });
    li.appendChild(labelList(rest));
    var summary = a.annotations.summary || a.annotations.description;
    if (summary) li.appendChild(el("p", { class: "summary" }, summary));
    var meta = a.state === "pending" ? "pending since " + when(a.activeAt) : "started " + when(a.startsAt);
    if (a.endsAt) meta += ", resolved " + when(a.endsAt);
    li.appendChild(el("p", { class: "meta" }, meta));
    var links = Object.keys(a.annotations).filter(function (k) { return /(_url|^dashboard)$/.test(k); });
    links.forEach(function (k) {
      var href = a.annotations[k];
      if (!/^(https?:\/\/|\/)/i.test(href)) href = "/" + href;
      li.appendChild(el("a", { href: href, class: "annotation-link" }, k.replace(/_url$/, "")));
    });
    return li;
  }

  function timeline(entries, total, into) {
    var ol = into.appendChild(el("ol", { class: "timeline" }));
    entries.forEach(function (h) {
      var li = ol.appendChild(el("li", { class: "kind-" + h.kind }));
      li.appendChild(el("time", {}, when(h.at)));
      li.appendChild(el("span", { class: "kind" }, h.kind));
      li.appendChild(el("span", {}, h.text));
    });
    if (total > entries.length) {
      into.appendChild(el("p", { class: "cut" }, "Showing the newest " + entries.length + " of " + total + " entries."));
    }
    if (!entries.length) into.appendChild(el("p", { class: "empty" }, "Nothing happened yet."));
  }

  function span(from, to) {
    var s = Math.max(0, Math.round(to - from)), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m ? m + "m " + (s % 60) + "s" : s + "s";
  }

  function incidentTitle(inc) {
    if (!inc.startedAt) return "Before incidents were recorded";
    var t = "Fired " + when(inc.startedAt);
    if (inc.resolvedAt) t += ", resolved " + when(inc.resolvedAt) + " (" + span(inc.startedAt, inc.resolvedAt) + ")";
    if (inc.acknowledgedBy.length) t += ", acknowledged by " + inc.acknowledgedBy.join(", ");
    return t;
  }

  // The current incident's history; the group's earlier incidents folded below it.
  function history(g) {
    var details = el("details", { class: "history" });
    if (openHistory[g.id]) details.open = true;
    details.addEventListener("toggle", function () { openHistory[g.id] = details.open; });
    var current = g.incidents[0] || { history: [], historyTotal: 0 };
    details.appendChild(el("summary", {}, "History (" + current.historyTotal + ")"));
    timeline(current.history, current.historyTotal, details);
    var earlier = g.incidents.slice(1);
    var more = g.incidentsTotal - 1;
    if (more > 0) {
      var fold = details.appendChild(el("details", { class: "earlier-incidents" }));
      fold.appendChild(el("summary", {}, more + " earlier incident" + (more === 1 ? "" : "s")));
      earlier.forEach(function (inc) {
        var box = fold.appendChild(el("div", { class: "incident", "data-incident": String(inc.id) }));
        box.appendChild(el("h4", {}, incidentTitle(inc)));
        timeline(inc.history, inc.historyTotal, box);
      });
      if (more > earlier.length) {
        fold.appendChild(el("p", { class: "cut" }, "Showing the latest " + earlier.length + " of " + more + " earlier incidents."));
      }
    }
    return details;
  }

  // A group that resolved and went: when it fired and resolved, who acknowledged, its alerts
  // and its history (folded).
  function resolvedCard(r) {
    var section = el("section", { class: "group resolved", "data-group": r.id, "data-incident": String(r.incident) });
    var head = section.appendChild(el("header", { class: "group-head" }));
    head.appendChild(el("span", { class: "receiver" }, "receiver: " + r.receiver));
    head.appendChild(labelList(r.labels, "labels group-labels"));
    head.appendChild(el("span", { class: "duration" }, "fired " + when(r.startedAt) + ", resolved " +
      when(r.resolvedAt) + " · lasted " + span(r.startedAt, r.resolvedAt)));
    head.appendChild(el("span", { class: "ack" }, r.acknowledgedBy.length ? "acknowledged by " + r.acknowledgedBy.join(", ") : "not acknowledged"));
    var ul = section.appendChild(el("ul", { class: "alerts" }));
    r.alerts.forEach(function (a) { ul.appendChild(alertItem(r, a)); });
    if (r.alertsTotal > r.alerts.length) {
      section.appendChild(el("p", { class: "cut" }, "Showing " + r.alerts.length + " of " + r.alertsTotal + " alerts of this incident."));
    }
    var key = "resolved-" + r.incident;
    var details = section.appendChild(el("details", { class: "history" }));
    if (openHistory[key]) details.open = true;
    details.addEventListener("toggle", function () { openHistory[key] = details.open; });
    details.appendChild(el("summary", {}, "History (" + r.historyTotal + ")"));
    timeline(r.history, r.historyTotal, details);
    return section;
  }

  function renderResolved(data) {
    var box = document.getElementById("resolved");
    var cards = data.resolved.map(resolvedCard);
    box.replaceChildren.apply(box, cards);
    if (!cards.length) box.appendChild(el("p", { class: "empty" }, "Nothing resolved in the last 120 h" + (filterInput.value.trim() ? " that matches the filter." : ".")));
    document.getElementById("resolved-counts").textContent = data.resolvedTotal + " incident" + (data.resolvedTotal === 1 ? "" : "s");
    show(document.getElementById("resolved-cut"), data.resolvedTotal > data.resolved.length
      ? "Showing the last " + data.resolved.length + " of " + data.resolvedTotal + " resolved incidents; narrow the filter to see the others." : "");
  }

  function groupCard(g) {
    var alerts = g.alerts.filter(visible);
    if (!alerts.length) return null;
    var section = el("section", { class: "group", "data-group": g.id });
    var head = section.appendChild(el("header", { class: "group-head" }));
    head.appendChild(el("span", { class: "receiver" }, g.receiver ? "receiver: " + g.receiver : "not routed yet"));
    head.appendChild(labelList(g.labels, "labels group-labels"));
    if (!g.stored) head.appendChild(el("span", { class: "flag" }, "pending only: not notified yet"));
    var firing = g.alerts.some(function (a) { return a.state === "firing"; });
    if (g.ack) {
      var text = (g.ack.holds ? "acknowledged by " : "acknowledgement lapsed: was ") + g.ack.by +
        (g.ack.holds ? " until " + when(g.ack.endsAt) : "");
      head.appendChild(el("span", { class: "ack" + (g.ack.holds ? "" : " lapsed") }, text));
    }
    if (canChange && g.stored && firing && !(g.ack && g.ack.holds)) {
      var b = head.appendChild(el("button", { type: "button", class: "ack-button" }, "Acknowledge"));
      var hold = head.appendChild(el("select", { class: "ack-for", "aria-label": "Acknowledge for" }));
      ["30m", "1h", "4h", "12h", "1d"].forEach(function (d) {
        var opt = hold.appendChild(el("option", { value: d }, "for " + d));
        if (d === "4h") opt.selected = true;
      });
      b.addEventListener("click", function () { acknowledge(g, b, hold.value); });
    }
    var ul = section.appendChild(el("ul", { class: "alerts" }));
    alerts.forEach(function (a) { ul.appendChild(alertItem(g, a)); });
    var hidden = g.alerts.length - alerts.length;
    if (hidden) section.appendChild(el("p", { class: "meta" }, hidden + " hidden by the toggles above"));
    if (g.alertsTotal > g.alerts.length) {
      section.appendChild(el("p", { class: "cut" }, "Showing " + g.alerts.length + " of " + g.alertsTotal + " alerts of this group."));
    }
    section.appendChild(history(g));
    return section;
  }

  function renderGroups(data) {
    lastGroups = data;
    var cards = data.groups.map(groupCard).filter(Boolean);
    groupsBox.replaceChildren.apply(groupsBox, cards);
    if (!cards.length) groupsBox.appendChild(el("p", { class: "empty" }, "No alert is firing or pending" + (filterInput.value.trim() ? " that matches the filter." : ".")));
    var n = { firing: 0, pending: 0, suppressed: 0 };
    data.groups.forEach(function (g) {
      g.alerts.forEach(function (a) { if (a.status in n) n[a.status] += 1; });
    });
    document.getElementById("counts").textContent = data.groupsTotal + " groups · " + n.firing +
      " firing · " + n.pending + " pending · " + n.suppressed + " silenced or inhibited";
    var cut = document.getElementById("groups-cut");
    var said = [];
    if (data.groupsTotal > data.groups.length) {
      said.push("Showing " + data.groups.length + " of " + data.groupsTotal + " groups (firing first); narrow the filter to see the others.");
    }
    var unread = readCut(data.cut || {});
    if (unread) said.push(unread);
    show(cut, said.join(" "));
    renderResolved(data);
  }

  // What alerts.db held beyond the server's read caps (data.cut: kind -> cap).
  function readCut(caps) {
    var names = { groups: "groups", pending: "pending alerts", silences: "unexpired silences", resolved: "resolved incidents" };
    var parts = Object.keys(names).filter(function (k) { return k in caps; }).map(function (k) {
      return "the first " + caps[k] + " of the " + names[k];
    });
    if (!parts.length) return "";
    return "alerts.db holds more than the page reads: it read " + parts.join(", ") +
      " (firing groups first); the filter, silences and inhibition apply to those only.";
  }

  function renderSilences(data) {
    var rows = data.silences.map(function (s) {
      var tr = el("tr", { "data-silence": s.id, class: s.status.state });
      tr.appendChild(el("td", { class: "state" }, s.status.state));
      var muted = 0;
      (lastGroups ? lastGroups.groups : []).forEach(function (g) {
        g.alerts.forEach(function (a) { if (a.silencedBy.indexOf(s.id) >= 0) muted += 1; });
      });
      var cell = tr.appendChild(el("td", { class: "matchers" }, s.text));
      if (s.status.state === "active") cell.appendChild(el("div", { class: "meta" }, "silences " + muted + " alert" + (muted === 1 ? "" : "s")));
      tr.appendChild(el("td", {}, when(s.startsAt)));
      tr.appendChild(el("td", {}, when(s.endsAt)));
      tr.appendChild(el("td", {}, s.createdBy));
      tr.appendChild(el("td", {}, s.comment));
      var last = tr.appendChild(el("td"));
      if (canChange && s.status.state !== "expired") {
        var b = last.appendChild(el("button", { type: "button", class: "expire" }, "Expire"));
        b.addEventListener("click", function () { expire(s, b); });
      }
      return tr;
    });
    silenceBody.replaceChildren.apply(silenceBody, rows);
    if (!rows.length) {
      var tr = silenceBody.appendChild(el("tr"));
      tr.appendChild(el("td", { colspan: "7", class: "empty" }, "No silences."));
    }
    show(document.getElementById("silences-cut"), data.total > data.silences.length
      ? "Showing " + data.silences.length + " of " + data.total + " silences." : "");
  }

  function load() {
    var filter = filterInput.value.trim();
    var url = main.getAttribute("data-groups") + (filter ? "?filter=" + encodeURIComponent(filter) : "");
    var groups = fetch(url, { headers: { Accept: "application/json" } }).then(function (rv) {
      if (rv.status === 401) window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
      return rv.json();
    }).then(function (body) {
      if (body.status !== "success") {
        var err = new Error(body.error);
        err.field = body.field;
        throw err;
      }
      show(filterError, "");
      show(document.getElementById("warnings"), (body.warnings || []).join("; "));
      renderGroups(body.data);
    });
    var silences = V.getJSON(main.getAttribute("data-silences"));
    return Promise.all([groups, silences]).then(function (done) {
      renderSilences(done[1]);
      status.className = "status";
      status.textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (err) {
      if (err.field === "filter") show(filterError, err.message);
      failed(err);
    });
  }

  function acknowledge(g, button, hold) {
    button.disabled = true;
    var url = main.getAttribute("data-ack").replace("GROUP", encodeURIComponent(g.id)) +
      "?for=" + encodeURIComponent(hold);
    V.sendJSON("POST", url, undefined, csrf).then(load).catch(function (err) {
      button.disabled = false;
      failed(err);
    });
  }

  function expire(s, button) {
    button.disabled = true;
    var url = main.getAttribute("data-silences") + "/" + encodeURIComponent(s.id);
    V.sendJSON("DELETE", url, undefined, csrf).then(load).catch(function (err) {
      button.disabled = false;
      failed(err);
    });
  }

  function prefill(a) {
    if (!silenceForm) return;
    silenceForm.elements.matchers.value = a.matchers;
    silenceForm.scrollIntoView({ block: "start" });
    silenceForm.elements.comment.focus();
  }

  function clearErrors() {
    silenceForm.querySelectorAll(".field-error").forEach(function (n) { show(n, ""); });
    silenceForm.querySelectorAll("[aria-invalid]").forEach(function (n) { n.removeAttribute("aria-invalid"); });
  }

  if (silenceForm) {
    silenceForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearErrors();
      var f = silenceForm.elements;
      var body = { matchers: f.matchers.value, comment: f.comment.value };
      if (f.endsAt.value) {
        var end = new Date(f.endsAt.value);
        body.endsAt = isNaN(end.getTime()) ? f.endsAt.value : end.toISOString();
      } else {
        body.duration = f.duration.value;
      }
      V.sendJSON("POST", main.getAttribute("data-silences"), body, csrf).then(function () {
        silenceForm.reset();
        return load();
      }).catch(function (err) {
        var slot = silenceForm.querySelector('[data-error-for="' + (err.field || "form") + '"]') ||
          silenceForm.querySelector('[data-error-for="form"]');
        show(slot, err.message);
        if (f[err.field]) f[err.field].setAttribute("aria-invalid", "true");
      });
    });
  }

  filterForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var params = new URLSearchParams(window.location.search);
    if (filterInput.value.trim()) params.set("filter", filterInput.value.trim());
    else params.delete("filter");
    var qs = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (qs ? "?" + qs : ""));
    load();
  });
  ["show-silenced", "show-inhibited", "show-acknowledged"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", function () {
      if (lastGroups) renderGroups(lastGroups);
    });
  });

  filterInput.value = new URLSearchParams(window.location.search).get("filter") || "";
  load();
  window.setInterval(load, REFRESH_MS);
})();
