// Helpers shared by the dashboard pages (overview.js, events.js, alerts.js): DOM building,
// dotted ECS field access and the JSON API envelope. Loaded before the page's
// own script; everything lives under window.Vigil.
(function () {
  "use strict";

  // A new element with attributes and, optionally, text.
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A field of an ECS document, nested ({"labels": {"x": 1}}) or dotted ({"labels.x": 1}).
  function field(doc, dotted) {
    if (dotted in doc) return doc[dotted];
    return dotted.split(".").reduce(function (node, part) {
      return node && typeof node === "object" ? node[part] : undefined;
    }, doc);
  }

  // GET a Vigil JSON API URL and resolve to its "data". A 401 (the session ended:
  // idle timeout, logout elsewhere) sends the browser to log in, then back here.
  // An error answer rejects with its message (and the KQL column, when it has one).
  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (rv) {
      if (rv.status === 401) {
        var here = window.location.pathname + window.location.search;
        window.location.assign("/login?next=" + encodeURIComponent(here));
      }
      return rv.json().then(function (body) {
        if (body.status !== "success") {
          var err = new Error(body.error || ("HTTP " + rv.status));
          err.column = body.column;
          throw err;
        }
        return body.data;
      });
    });
  }

  // POST/DELETE JSON with the session's CSRF token; resolves to "data" like getJSON.
  // An error answer rejects with its message and, for a form field, its name (err.field).
  function sendJSON(method, url, body, csrf) {
    var init = {
      method: method,
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (rv) {
      return rv.json().then(function (body) {
        if (body.status !== "success") {
          var err = new Error(body.error || ("HTTP " + rv.status));
          err.field = body.field;
          throw err;
        }
        return body.data;
      });
    });
  }

  window.Vigil = { el: el, field: field, getJSON: getJSON, sendJSON: sendJSON };
})();
