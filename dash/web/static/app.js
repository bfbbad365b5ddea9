// dinp dashboard: progressive enhancements only; every page works without it.
"use strict";

// streamInto appends a followed text stream (fetch + ReadableStream) to a
// <pre>, keeping the view at the bottom unless the reader scrolled up.
function streamInto(url, pre, signal) {
  return fetch(url, { credentials: "same-origin", signal: signal }).then(function (resp) {
    if (!resp.ok || !resp.body) { return; }
    var reader = resp.body.getReader();
    var dec = new TextDecoder();
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) { return; }
        var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.appendChild(document.createTextNode(dec.decode(r.value, { stream: true })));
        if (atEnd) { pre.scrollTop = pre.scrollHeight; }
        return pump();
      });
    }
    return pump();
  }).catch(function () {});
}

// Live log tail on the app page.
function initLogTail() {
  var pre = document.getElementById("log");
  if (!pre || !pre.dataset.follow) { return; }
  pre.scrollTop = pre.scrollHeight;
  streamInto(pre.dataset.follow, pre);
}

// Instances refresh on the app page: re-render the table from the API.
function initInstances() {
  var card = document.getElementById("instances-card");
  if (!card) { return; }
  var app = card.dataset.app;
  var tbody = document.querySelector("#instances tbody");
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) { var s = document.createElement("span"); s.className = "badge " + text; s.textContent = text; td.appendChild(s); }
    else { td.textContent = text; }
    tr.appendChild(td);
  }
  function refresh() {
    fetch("/api/v1/apps/" + encodeURIComponent(app), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) { return; }
        tbody.textContent = "";
        d.instances.forEach(function (i) {
          var tr = document.createElement("tr");
          cell(tr, String(i.index)); cell(tr, i.id.slice(0, 12)); cell(tr, "v" + i.release); cell(tr, i.node);
          cell(tr, i.addr); cell(tr, i.state, true); cell(tr, i.health, true); cell(tr, String(i.restarts));
          cell(tr, i.started_at ? new Date(i.started_at).toLocaleTimeString() : "");
          cell(tr, i.last_exit ? i.last_exit + (i.last_exit_at ? " at " + new Date(i.last_exit_at).toLocaleTimeString() : "") : "");
          tbody.appendChild(tr);
        });
        if (!d.instances.length) {
          var tr = document.createElement("tr"); var td = document.createElement("td");
          td.colSpan = 10; td.className = "muted"; td.textContent = "No instances."; tr.appendChild(td); tbody.appendChild(tr);
        }
      }).catch(function () {});
  }
  setInterval(refresh, 3000);
}

// Deploy page: upload with a progress bar (XHR upload events) while the
// build log streams in; without JS the form posts and the page reloads.
function initDeploy() {
  var form = document.getElementById("deploy-form");
  if (!form) { return; }
  form.addEventListener("submit", function (ev) {
    var file = document.getElementById("tarball").files[0];
    if (!file) { return; }
    ev.preventDefault();
    var bar = document.getElementById("progress"), status = document.getElementById("status");
    var log = document.getElementById("build-log"), button = document.getElementById("upload");
    button.disabled = true; bar.hidden = false; bar.value = 0; log.textContent = "";
    var ctrl = new AbortController();
    streamInto(form.dataset.log, log, ctrl.signal);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.api);
    xhr.setRequestHeader("Content-Type", "application/gzip");
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); status.textContent = "Uploading… " + bar.value + "%"; }
    };
    xhr.upload.onload = function () { bar.value = 100; status.textContent = "Uploaded; building…"; };
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) {}
      // Give the log stream a moment to deliver the last build lines.
      setTimeout(function () { ctrl.abort(); }, 1500);
      button.disabled = false;
      if (xhr.status === 201 && body.release) {
        status.className = "flash ok";
        status.innerHTML = "";
        status.appendChild(document.createTextNode("Release v" + body.release.version + " created. "));
        var a = document.createElement("a"); a.href = form.dataset.done; a.id = "deployed"; a.textContent = "Watch it roll out →";
        status.appendChild(a);
        watchRollout(form.dataset.status + body.release.version + "/status");
      } else {
        status.className = "flash err";
        status.textContent = (body.error && body.error.message) || ("Deploy failed: HTTP " + xhr.status);
      }
    };
    xhr.onerror = function () { ctrl.abort(); button.disabled = false; status.className = "flash err"; status.textContent = "Upload failed: network error"; };
    xhr.send(file);
  });
}

// watchRollout polls a release's status until it is healthy, cannot
// become healthy or was rolled back, and shows why with the failing
// instance's last output lines.
function watchRollout(url) {
  var el = document.getElementById("rollout"), ev = document.getElementById("rollout-evidence");
  el.hidden = false; el.className = "muted";
  function poll() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { setTimeout(poll, 2000); return; }
        if (s.state === "deploying") {
          el.textContent = "Rolling out v" + s.release + ": " + s.healthy + "/" + s.wanted + " instances healthy…";
          setTimeout(poll, 2000);
          return;
        }
        if (s.state === "healthy") {
          el.className = "flash ok"; el.textContent = "v" + s.release + ": " + s.healthy + "/" + s.wanted + " instances healthy.";
          return;
        }
        el.className = "flash err";
        el.textContent = s.state === "rolled_back" ? "Rolled back to v" + s.current_release + ": " + s.reason
          : s.state === "failed" ? s.reason : "v" + s.release + " was replaced by v" + s.current_release + ".";
        if (s.lines && s.lines.length) { ev.hidden = false; ev.textContent = s.lines.join("\n"); }
      }).catch(function () { setTimeout(poll, 2000); });
  }
  poll();
}

// Metrics charts on the app page: the card is server-rendered SVG; fetch it
// again every 10 s (while the tab is visible), and switch windows in place.
function initCharts() {
  var card = document.getElementById("charts");
  if (!card || !card.dataset.src) { return; }
  function load(src) {
    fetch(src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { card.innerHTML = html; card.dataset.src = src; } })
      .catch(function () {});
  }
  card.addEventListener("click", function (ev) {
    var a = ev.target.closest("a[data-window]");
    if (!a) { return; }
    ev.preventDefault();
    history.replaceState(null, "", a.href);
    load(card.dataset.src.replace(/window=[^&]*/, "window=" + a.dataset.window));
  });
  setInterval(function () { if (!document.hidden) { load(card.dataset.src); } }, 10000);
}

// Forms with data-confirm ask first.
function initConfirm() {
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) { if (!window.confirm(f.dataset.confirm)) { ev.preventDefault(); } });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  initLogTail(); initInstances(); initCharts(); initDeploy(); initConfirm();
});
