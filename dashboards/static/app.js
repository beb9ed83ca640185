// nlpmon pages: draws the charts whose data the server put in JSON blocks, submits
// filter forms on change, and gives the review page its keyboard shortcuts.
// No inline scripts anywhere (the pages' CSP forbids them).
(function () {
  "use strict";

  // Hover formats; usd keeps 3 significant digits, as the pages print money ($0.000031, not $0.0000).
  var UNIT_FORMAT = { pct: ".1%", ms: ",.0f", usd: "$.3~g", count: ",.0f", x: ".3g" };

  function valueAxis(unit) {
    if (unit === "usd") {  // plotly's own tick digits, never an SI suffix such as 31µ
      return { tickprefix: "$", exponentformat: "none", separatethousands: true, rangemode: "tozero" };
    }
    return { tickformat: UNIT_FORMAT[unit] || "", rangemode: "tozero" };
  }

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  // Tick spacings a time axis may use, in ms: never finer than the data's bucket (a chart of day
  // points has day ticks, one point included), at most about 8 ticks.
  var DAY = 864e5;
  var NICE_TICKS = [6e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, DAY, 2 * DAY, 7 * DAY, 14 * DAY];

  function timeAxis(bucketSeconds, xs) {
    var axis = { type: "date" };
    var bucket = (bucketSeconds || 0) * 1000;
    var ms = xs.map(function (x) { return Date.parse(x); }).filter(function (v) { return !isNaN(v); });
    if (!bucket || !ms.length) { return axis; }
    var lo = Math.min.apply(null, ms), hi = Math.max.apply(null, ms);
    if (hi - lo < bucket) {  // one point (or one bucket): a bucket either side, not a millisecond axis
      lo -= bucket; hi += bucket;
      axis.range = [new Date(lo).toISOString(), new Date(hi).toISOString()];
    }
    var span = hi - lo, dtick = null;
    for (var i = 0; i < NICE_TICKS.length; i++) {
      if (NICE_TICKS[i] >= bucket && span / NICE_TICKS[i] <= 8) { dtick = NICE_TICKS[i]; break; }
    }
    if (dtick === null) {  // longer than 8 of the widest: whole months
      axis.dtick = "M" + Math.max(1, Math.ceil(span / 8 / (30 * DAY)));
      axis.tick0 = "2000-01-01";
      axis.tickformat = "%b %Y";
      return axis;
    }
    axis.dtick = dtick;
    axis.tick0 = "2000-01-03";  // a Monday, midnight UTC: day ticks at midnight, week ticks on Mondays
    if (dtick >= DAY) { axis.tickformat = "%b %d"; }
    return axis;
  }

  function markerShapes(markers) {
    var shapes = [], notes = [];
    (markers || []).forEach(function (m) {
      var color = m.kind === "alert" ? "#c62828" : m.kind === "prompt" ? "#6a1b9a" : "#888";
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: m.x, x1: m.x, y0: 0, y1: 1,
                    line: { color: color, width: 1, dash: m.kind === "alert" ? "solid" : "dash" } });
      // A prompt version's marker links to its release (a path of ours; the label is escaped: it is logged data).
      var label = String(m.label).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
      var text = m.href && /^\/releases\/[\w-]+$/.test(m.href) ? '<a href="' + m.href + '">' + label + "</a>" : label;
      notes.push({ x: m.x, y: 1, xref: "x", yref: "paper", text: text, showarrow: false,
                   textangle: -90, xanchor: "right", yanchor: "top", font: { size: 9, color: color } });
    });
    return { shapes: shapes, annotations: notes };
  }

  function drawCharts() {
    var data = readJson("chart-data");
    if (!data || !window.Plotly) { return; }
    var marks = markerShapes(data.markers);
    data.charts.forEach(function (c) {
      var el = document.querySelector('[data-chart="' + c.id + '"]');
      if (!el || !c.traces.some(function (t) { return t.x.length; })) { return; }
      var traces = c.traces.map(function (t) {
        return { x: t.x, y: t.y, name: t.name, type: "scatter", mode: t.x.length > 60 ? "lines" : "lines+markers",
                 line: { dash: t.dash ? "dot" : (t.band ? "dash" : "solid"), width: t.band ? 1 : 2 } };
      });
      var shapes = marks.shapes.slice();
      var notes = marks.annotations.slice();
      (c.lines || []).forEach(function (l) {
        shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: l.y, y1: l.y,
                      line: { color: "#2e7d32", width: 1, dash: "dot" } });
        notes.push({ xref: "paper", x: 1, y: l.y, text: l.label, showarrow: false, xanchor: "right",
                     yanchor: "bottom", font: { size: 10, color: "#2e7d32" } });
      });
      var xs = [];
      c.traces.forEach(function (t) { xs = xs.concat(t.x); });
      (data.markers || []).forEach(function (m) { xs.push(m.x); });
      el.innerHTML = "";
      window.Plotly.newPlot(el, traces, {
        margin: { l: 60, r: 10, t: 10, b: 40 }, height: 260, showlegend: traces.length > 1,
        legend: { orientation: "h", y: -0.25 }, yaxis: valueAxis(c.unit),
        xaxis: timeAxis(c.bucket, xs), shapes: shapes, annotations: notes
      }, { displaylogo: false, responsive: true });
    });
  }

  function drawSparks() {
    var sparks = readJson("sparks");
    if (!sparks || !window.Plotly) { return; }
    document.querySelectorAll("[data-spark]").forEach(function (el) {
      var s = sparks[el.getAttribute("data-spark")];
      if (!s || !s.x.length) { return; }
      window.Plotly.newPlot(el, [{ x: s.x, y: s.y, type: "scatter", mode: "lines", line: { width: 1.5, color: "#1565c0" },
                                   hovertemplate: "%{x}<br>%{y:" + (UNIT_FORMAT[s.unit] || "") + "}<extra></extra>" }], {
        margin: { l: 0, r: 0, t: 0, b: 0 }, height: 24, width: el.clientWidth || 84, xaxis: { visible: false },
        yaxis: { visible: false }, showlegend: false, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { staticPlot: false, displayModeBar: false });
    });
  }

  function drawTimelines() {
    document.querySelectorAll("[data-timeline]").forEach(function (el) {
      var data = readJson(el.getAttribute("data-timeline"));
      if (!data || !data.timeline || !data.timeline.length || !window.Plotly) {
        el.textContent = "No alert fired in this time.";
        el.classList.add("muted");
        return;
      }
      var traces = data.timeline.map(function (t) {
        return { x: [t.start, t.end], y: [t.name, t.name], mode: "lines+markers", type: "scatter", showlegend: false,
                 line: { width: 10, color: t.open ? "#c62828" : (t.severity === "page" ? "#ef6c00" : "#90a4ae") },
                 hovertemplate: t.name + "<br>%{x}<extra></extra>" };
      });
      var names = {};
      data.timeline.forEach(function (t) { names[t.name] = 1; });
      window.Plotly.newPlot(el, traces, {
        margin: { l: 260, r: 10, t: 10, b: 30 }, height: 60 + 26 * Object.keys(names).length,
        xaxis: { type: "date", range: [data.from, data.to] }, yaxis: { automargin: true }
      }, { displaylogo: false, responsive: true });
    });
  }

  function autosubmit() {
    document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
      form.addEventListener("change", function (ev) {
        var t = ev.target;
        if (t.type === "datetime-local") {
          var custom = form.querySelector('input[name="period"][value="custom"]');
          if (custom) { custom.checked = true; }
          if (!form.querySelector('input[name="from"]').value || !form.querySelector('input[name="to"]').value) { return; }
        }
        if (t.name === "period" && t.value === "custom") { return; }
        form.requestSubmit();
      });
      form.addEventListener("submit", function () {
        // Empty fields stay out of the URL; from/to only matter for a custom period.
        var custom = form.querySelector('input[name="period"][value="custom"]');
        form.querySelectorAll("input, select").forEach(function (el) {
          if ((el.name === "from" || el.name === "to") && custom && !custom.checked) { el.disabled = true; }
          else if (el.name && !el.value) { el.disabled = true; }
          if (el.name === "period" && el.value === "custom" && el.checked) { el.disabled = true; }
        });
      });
    });
  }

  function reviewKeys() {
    var form = document.getElementById("label-form");
    if (!form) { return; }
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var tag = (ev.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select") { return; }
      var button = form.querySelector('button[data-key="' + ev.key.toLowerCase() + '"]');
      if (button) { ev.preventDefault(); button.click(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    autosubmit();
    reviewKeys();
    drawCharts();
    drawSparks();
    drawTimelines();
  });
})();
