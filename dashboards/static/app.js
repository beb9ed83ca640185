// nlpmon pages: draws the charts whose data the server put in JSON blocks, submits
// filter forms on change, and gives the review page its keyboard shortcuts.
// No inline scripts anywhere (the pages' CSP forbids them).
(function () {
  "use strict";

  var UNIT_FORMAT = { pct: ".1%", ms: ",.0f", usd: "$,.4f", count: ",.0f", x: ".3g" };

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function markerShapes(markers) {
    var shapes = [], notes = [];
    (markers || []).forEach(function (m) {
      var color = m.kind === "alert" ? "#c62828" : m.kind === "prompt" ? "#6a1b9a" : "#888";
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: m.x, x1: m.x, y0: 0, y1: 1,
                    line: { color: color, width: 1, dash: m.kind === "alert" ? "solid" : "dash" } });
      notes.push({ x: m.x, y: 1, xref: "x", yref: "paper", text: m.label, showarrow: false,
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
      el.innerHTML = "";
      window.Plotly.newPlot(el, traces, {
        margin: { l: 60, r: 10, t: 10, b: 40 }, height: 260, showlegend: traces.length > 1,
        legend: { orientation: "h", y: -0.25 }, yaxis: { tickformat: UNIT_FORMAT[c.unit] || "", rangemode: "tozero" },
        xaxis: { type: "date" }, shapes: shapes, annotations: notes
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
        margin: { l: 0, r: 0, t: 0, b: 0 }, height: 28, width: 110, xaxis: { visible: false },
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
