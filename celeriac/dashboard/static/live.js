// The Live page: follows /live/stream (server-sent events) and prepends one row per event.
// Every value is written with textContent, never as markup: an event's data cannot inject.
"use strict";
(function () {
  const table = document.getElementById("live");
  if (!table) { return; }
  const body = table.querySelector("tbody");
  const status = document.getElementById("live-status");
  const heartbeats = document.getElementById("heartbeats");
  const taskUrl = table.dataset.taskUrl;
  const KEEP = 500;
  let source = null;

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function details(event) {
    const data = event.data || {};
    const parts = [];
    for (const key of ["state", "runtime", "result", "exception", "reason", "seconds", "args", "kwargs", "hostname"]) {
      const value = data[key];
      if (value === undefined || value === null || value === "") { continue; }
      if (key === "runtime" && typeof value === "number") {
        parts.push("runtime=" + value.toFixed(3) + " s");
      } else {
        parts.push(key + "=" + (typeof value === "string" ? value : JSON.stringify(value)));
      }
    }
    return parts.join(" ").slice(0, 400);
  }

  function show(event) {
    const data = event.data || {};
    const row = document.createElement("tr");
    row.dataset.type = event.type;
    cell(row, new Date(event.time * 1000).toISOString().replace("T", " ").slice(0, 23));
    cell(row, event.type);
    cell(row, event.worker);
    const taskId = data.uuid || data.id;
    const name = data.name || data.task || "";
    const td = cell(row, "");
    if (taskId) {
      const link = document.createElement("a");
      link.href = taskUrl.replace("TASK_ID", encodeURIComponent(taskId));
      link.textContent = (name ? name + " " : "") + "[" + taskId + "]";
      link.dataset.taskId = taskId;
      td.appendChild(link);
    } else {
      td.textContent = name;
    }
    cell(row, details(event));
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > KEEP) { body.deleteRow(body.rows.length - 1); }
  }

  function connect() {
    if (source) { source.close(); }
    let url = table.dataset.stream;
    if (heartbeats && heartbeats.checked) { url += "?heartbeats=1"; }
    source = new EventSource(url);
    source.onopen = function () { status.textContent = "live"; status.className = "status live"; };
    source.onerror = function () { status.textContent = "reconnecting…"; status.className = "status"; };
    source.onmessage = function (message) { show(JSON.parse(message.data)); };
  }

  if (heartbeats) { heartbeats.addEventListener("change", connect); }
  connect();
})();
