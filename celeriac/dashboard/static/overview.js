// The Overview page's chart: fetches /overview/series (JSON read from the broker's metric
// rollups) and draws processed and failed per second with uPlot; the range tabs switch it
// without a reload, and it is fetched again every REFRESH_MS. Every text is set with
// textContent. The uPlot instance is kept on window.celeriacChart (the browser tests read it).
"use strict";
(function () {
  const box = document.getElementById("chart");
  if (!box || typeof uPlot === "undefined") { return; }
  const total = document.getElementById("chart-total");
  const tabs = document.querySelectorAll("#ranges a[data-range]");
  const REFRESH_MS = 5000;
  const HEIGHT = 260;
  let range = box.dataset.range;
  let plot = null;
  let timer = null;

  function width() { return Math.max(300, box.clientWidth); }

  // Times in UTC, as every other page of the dashboard shows them.
  function utc(seconds, hourly) {
    const text = new Date(seconds * 1000).toISOString();  // 2026-12-04T15:42:00.000Z
    return hourly ? text.slice(5, 10) + " " + text.slice(11, 16) : text.slice(11, 16);
  }

  function options(step) {
    const perMinute = step < 3600;
    return {
      width: width(), height: HEIGHT,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } } },
      axes: [
        { label: "UTC", space: perMinute ? 50 : 90, values: function (u, splits) { return splits.map(function (t) { return utc(t, !perMinute); }); } },
        { label: "per second", size: 60 },
      ],
      cursor: { points: { size: 6 } },
      series: [
        { label: "period", value: function (u, t) { return t === null ? "-" : utc(t, true) + " UTC"; } },
        { label: "finished", stroke: "#3b7a4a", fill: "rgba(59, 122, 74, 0.12)", width: 2, points: { show: false },
          value: function (u, v) { return v === null ? "-" : v.toFixed(perMinute ? 2 : 3) + "/s"; } },
        { label: "failed", stroke: "#b3261e", width: 2, points: { show: false },
          value: function (u, v) { return v === null ? "-" : v.toFixed(perMinute ? 2 : 3) + "/s"; } },
      ],
    };
  }

  function draw(series) {
    const data = [series.times, series.processed, series.failed];
    if (plot && plot.celeriacStep === series.step) {
      plot.setData(data);
    } else {
      if (plot) { plot.destroy(); }
      plot = new uPlot(options(series.step), data, box);
      plot.celeriacStep = series.step;
    }
    window.celeriacChart = plot;
    box.dataset.drawn = series.range;
    const rate = series.total.error_rate;
    total.textContent = series.total.processed + " finished, " + series.total.failed + " failed in the last " +
      series.range + (rate === null ? "" : " (error rate " + (Math.round(rate * 1000) / 10).toFixed(1) + "%)") + ".";
    total.dataset.processed = series.total.processed;
    total.dataset.failed = series.total.failed;
  }

  function load() {
    fetch(box.dataset.series + "?range=" + encodeURIComponent(range), {
      credentials: "same-origin", headers: { "Accept": "application/json" }, redirect: "manual",
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 401) {
        window.location.reload();  // the session ended: the page goes to /login and back
        return null;
      }
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (series) {
      if (series) { draw(series); }
    }).catch(function (error) {
      total.textContent = "Could not read the series: " + error.message;
    });
  }

  function start() {
    if (timer) { clearInterval(timer); }
    load();
    timer = setInterval(load, REFRESH_MS);
  }

  tabs.forEach(function (tab) {
    tab.addEventListener("click", function (event) {
      event.preventDefault();
      range = tab.dataset.range;
      tabs.forEach(function (other) {
        other.classList.toggle("current", other === tab);
        if (other === tab) { other.setAttribute("aria-current", "true"); } else { other.removeAttribute("aria-current"); }
      });
      history.replaceState(null, "", tab.href);
      start();
    });
  });
  window.addEventListener("resize", function () { if (plot) { plot.setSize({ width: width(), height: HEIGHT }); } });
  start();
})();
