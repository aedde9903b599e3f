"""The style sheet and script embedded in ``report.html`` (:func:`medseg.review.report.write_report`).

:data:`REPORT_CSS` lays out the page; :data:`REPORT_JS` (vanilla JavaScript, no network) sorts the
case table (the rows come ordered: out-of-distribution cases first, then most uncertain), filters
flagged cases, keeps the radiologist's accept / needs-correction decisions and comments in
``localStorage`` and exports them as CSV (formula-safe cells) or JSON through a Blob download, and
drives the 3D viewer (slice slider over pre-rendered slices, arrow keys, overlay toggle and opacity).
"""

from __future__ import annotations

__all__ = ["REPORT_CSS", "REPORT_JS"]

REPORT_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em;color:#111;background:#fafafa}
h1{margin:.2em 0}h2{margin:.8em 0 .3em}h3{margin:.6em 0 .2em;font-size:1em}
.meta{color:#555}
ul.counts{list-style:none;padding:0;display:flex;gap:1.5em;flex-wrap:wrap}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
table.cases th{position:sticky;top:0;background:#eee;cursor:pointer;user-select:none;white-space:nowrap}
table.cases th.asc::after{content:" \\25B2"}table.cases th.desc::after{content:" \\25BC"}
td img{width:180px;max-height:240px;object-fit:contain;display:block}
ul.kv{list-style:none;margin:0;padding:0}.k{color:#555}
.sub{font-size:.8em;color:#777;text-transform:uppercase}
.err{color:#a00;white-space:pre-wrap;max-width:28em}
tr.failed td{background:#fee}tr.skipped td{background:#f4f4f4;color:#666}
.flag{background:#c00;color:#fff;padding:1px 5px;border-radius:3px;white-space:nowrap}
.bar{width:80px;height:6px;background:#ddd}.bar i{display:block;height:6px;background:#e67e22}
.na,.missing{color:#999}
.fb button{margin:0 4px 4px 0;padding:3px 8px;border:1px solid #888;border-radius:3px;background:#fff;cursor:pointer}
.fb button.on.acc{background:#2e7d32;color:#fff}.fb button.on.cor{background:#c62828;color:#fff}
.fb textarea{width:13em;display:block}.saved{font-size:.8em;color:#777}
.toolbar{margin:.6em 0;display:flex;gap:.6em;align-items:center;flex-wrap:wrap}
.ood{background:#6a1b9a;color:#fff;padding:1px 5px;border-radius:3px;white-space:nowrap}
ul.why{margin:.2em 0 0 1em;padding:0;max-width:26em;font-size:.9em}
details.viewer summary{cursor:pointer;color:#1565c0;font-size:.9em}
details.viewer .planes{display:flex;gap:4px;margin:4px 0}details.viewer .planes img{width:150px}
.stack{outline:none;margin-top:4px}.stack:focus .frame{box-shadow:0 0 0 2px #1565c0}
.stack .frame{position:relative;display:inline-block;background:#000;line-height:0}
.stack .frame img{width:auto;max-height:none;display:block}
.stack .frame img.ov{position:absolute;left:0;top:0}
.stack .ctl{display:flex;gap:6px;align-items:center;margin-top:3px}.stack .num{font-size:.85em;color:#555}
.stack .leg span{display:inline-block;margin-right:8px;font-size:.85em}
.stack .leg i{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:middle}
"""

REPORT_JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("medseg-data").textContent);
  var KEY = "medseg-feedback:" + DATA.report_id;
  var table = document.getElementById("cases");
  var tbody = table.tBodies[0];

  function load() {
    try { return JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; }
    catch (e) { return {}; }
  }
  var store = load();
  function save() {
    try { window.localStorage.setItem(KEY, JSON.stringify(store)); return true; }
    catch (e) { return false; }  // storage disabled (private mode, file:// policy): keep in memory
  }

  function caseInfo(id) {
    for (var i = 0; i < DATA.cases.length; i++) if (DATA.cases[i].case_id === id) return DATA.cases[i];
    return {};
  }
  function render(box) {
    var fb = store[box.getAttribute("data-case")] || {};
    box.querySelectorAll("button").forEach(function (b) {
      b.classList.toggle("on", b.getAttribute("data-decision") === fb.decision);
    });
    var ta = box.querySelector("textarea");
    if (document.activeElement !== ta) ta.value = fb.comment || "";
    box.querySelector(".saved").textContent = fb.updated ? "saved " + fb.updated : "";
  }
  function setFeedback(id, patch) {
    var fb = store[id] || {};
    for (var k in patch) fb[k] = patch[k];
    fb.updated = new Date().toISOString();
    store[id] = fb;
    save();
  }
  document.querySelectorAll(".fb").forEach(function (box) {
    var id = box.getAttribute("data-case");
    box.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () {
        var d = b.getAttribute("data-decision");
        var cur = (store[id] || {}).decision;
        setFeedback(id, {decision: cur === d ? "" : d});
        render(box);
      });
    });
    box.querySelector("textarea").addEventListener("input", function (ev) {
      setFeedback(id, {comment: ev.target.value});
      render(box);
    });
    render(box);
  });

  var FIELDS = ["case_id", "task", "decision", "comment", "uncertainty", "needs_review", "updated"];
  function rows() {
    var out = [];
    DATA.cases.forEach(function (c) {
      var fb = store[c.case_id];
      if (!fb || (!fb.decision && !fb.comment)) return;
      out.push({case_id: c.case_id, task: c.task, decision: fb.decision || "", comment: fb.comment || "",
                uncertainty: c.uncertainty, needs_review: c.needs_review, updated: fb.updated || ""});
    });
    return out;
  }
  function csvCell(v) {
    var s = v === null || v === undefined ? "" : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;  // no formula injection when opened in a spreadsheet
    return '"' + s.replace(/"/g, '""') + '"';
  }
  function toCSV() {
    var lines = [FIELDS.join(",")];
    rows().forEach(function (r) { lines.push(FIELDS.map(function (f) { return csvCell(r[f]); }).join(",")); });
    return lines.join("\r\n") + "\r\n";
  }
  function toJSON() {
    return JSON.stringify({report: DATA.title, report_id: DATA.report_id, generated: DATA.generated,
                           exported: new Date().toISOString(), feedback: rows()}, null, 2);
  }
  function download(text, name, mime) {
    var blob = new Blob([text], {type: mime});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    return a;
  }
  document.getElementById("export-csv").addEventListener("click", function () {
    download(toCSV(), "feedback.csv", "text/csv;charset=utf-8");
  });
  document.getElementById("export-json").addEventListener("click", function () {
    download(toJSON(), "feedback.json", "application/json");
  });
  document.getElementById("clear-feedback").addEventListener("click", function () {
    if (!window.confirm("Clear all feedback saved for this report in this browser?")) return;
    store = {};
    save();
    document.querySelectorAll(".fb").forEach(render);
  });

  // sorting: click a header; numbers sort numerically, empty values last
  function val(tr, i) {
    var td = tr.cells[i];
    return td ? td.getAttribute("data-v") || "" : "";
  }
  function sortBy(i, dir) {
    var rs = Array.prototype.slice.call(tbody.rows);
    rs.sort(function (a, b) {
      var x = val(a, i), y = val(b, i);
      if (x === "" && y === "") return 0;
      if (x === "") return 1;
      if (y === "") return -1;
      var nx = Number(x), ny = Number(y), c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny;
      else c = x.localeCompare(y, undefined, {numeric: true});
      return dir === "asc" ? c : -c;
    });
    rs.forEach(function (r) { tbody.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, j) {
      th.classList.remove("asc", "desc");
      if (j === i) th.classList.add(dir);
    });
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    if (th.getAttribute("data-key") === "feedback") return;
    th.addEventListener("click", function () {
      sortBy(i, th.classList.contains("desc") ? "asc" : "desc");
    });
  });
  // default order: as written (out-of-distribution cases first, then most uncertain, skipped last)

  document.getElementById("only-review").addEventListener("change", function (ev) {
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      tr.hidden = ev.target.checked && tr.getAttribute("data-review") !== "1";
    });
  });

  // 3D viewer: pre-rendered slices, arrow keys, overlay toggle ("o") and opacity
  var STACKS = JSON.parse(document.getElementById("medseg-stacks").textContent);
  function initStack(el) {
    if (el.getAttribute("data-ready")) return true;
    var s = STACKS[el.getAttribute("data-case")];
    if (!s || !s.images || !s.images.length) { el.hidden = true; return false; }
    el.setAttribute("data-ready", "1");
    var base = el.querySelector("img.base"), ov = el.querySelector("img.ov");
    var pos = el.querySelector("input.pos"), num = el.querySelector(".num");
    var btn = el.querySelector(".ovbtn"), alpha = el.querySelector("input.alpha");
    var hasOv = s.overlays && s.overlays.length === s.images.length, on = hasOv;
    base.width = s.width; base.height = s.height; ov.width = s.width; ov.height = s.height;
    pos.max = String(s.images.length - 1);
    function show(i) {
      i = Math.max(0, Math.min(s.images.length - 1, i));
      pos.value = String(i);
      base.src = s.images[i];
      if (hasOv) ov.src = s.overlays[i];
      num.textContent = s.view + " " + s.slices[i] + " (" + (i + 1) + "/" + s.images.length + ")";
      el.setAttribute("data-index", String(i));
    }
    function setOverlay(v) {
      on = v && hasOv;
      ov.style.visibility = on ? "visible" : "hidden";
      btn.textContent = on ? "overlay on" : "overlay off";
      btn.setAttribute("aria-pressed", on ? "true" : "false");
    }
    if (!hasOv) { btn.disabled = true; alpha.disabled = true; ov.hidden = true; }
    pos.addEventListener("input", function () { show(Number(pos.value)); });
    btn.addEventListener("click", function () { setOverlay(!on); });
    alpha.addEventListener("input", function () { ov.style.opacity = String(Number(alpha.value) / 100); });
    el.addEventListener("keydown", function (ev) {
      if (ev.target === pos || ev.target === alpha) return;  // the sliders move themselves
      var i = Number(pos.value);
      if (ev.key === "ArrowUp" || ev.key === "ArrowRight") { show(i + 1); ev.preventDefault(); }
      else if (ev.key === "ArrowDown" || ev.key === "ArrowLeft") { show(i - 1); ev.preventDefault(); }
      else if (ev.key === "PageUp") { show(i + 10); ev.preventDefault(); }
      else if (ev.key === "PageDown") { show(i - 10); ev.preventDefault(); }
      else if (ev.key === "o" || ev.key === "O") { setOverlay(!on); ev.preventDefault(); }
    });
    var leg = el.querySelector(".leg");
    Object.keys(s.legend || {}).forEach(function (k) {
      var span = document.createElement("span"), sw = document.createElement("i");
      var c = (s.colors || {})[k] || [255, 255, 255];
      sw.style.background = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      span.appendChild(sw);
      span.appendChild(document.createTextNode(s.legend[k]));
      leg.appendChild(span);
    });
    setOverlay(true);
    show(s.start || 0);
    return true;
  }
  document.querySelectorAll("details.viewer").forEach(function (d) {
    d.addEventListener("toggle", function () {
      var st = d.querySelector(".stack");
      if (d.open && st && initStack(st)) st.focus();
    });
  });

  window.medsegFeedback = {toCSV: toCSV, toJSON: toJSON, store: function () { return store; },
                           sortBy: sortBy, download: download};
  window.medsegViewer = {init: initStack, stacks: STACKS};
})();
"""
