// profdiff differential flame graph: renders the merged frame tree embedded
// in #pd-data as absolutely positioned boxes (root at the top). Click a
// frame to zoom, search with a regex, hover for the statistics, switch the
// width between the candidate, the baseline and both sides.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("pd-data").textContent);
  var F = D.frames;
  var NAME = 0, PAR = 1, BI = 2, CI = 3, BS = 4, CS = 5, QI = 6, QS = 7, FILL = 8, CSAM = 9, BSAM = 10, FILL_SELF = 11;
  var H = 18;
  var flame = document.getElementById("flame");
  var tip = document.getElementById("tip");
  var details = document.getElementById("details");
  var matched = document.getElementById("matched");
  var kids = [];
  var i;
  for (i = 0; i < F.length; i++) kids.push([]);
  for (i = 1; i < F.length; i++) kids[F[i][PAR]].push(i);
  var culprit = {}, primary = {};
  D.culprits.forEach(function (c, ci) {
    c.frames.forEach(function (f, k) {
      culprit[f] = true;
      if (k === 0) primary[f] = ci;
    });
  });
  var view = "cand", zoom = 0, matches = null, color = D.color_by;
  var legend = document.getElementById("legend-text");
  var dark = D.fills.map(function (h) {
    var r = parseInt(h.substr(1, 2), 16), g = parseInt(h.substr(3, 2), 16), b = parseInt(h.substr(5, 2), 16);
    return 0.299 * r + 0.587 * g + 0.114 * b < 140;
  });

  function val(i) {
    var f = F[i];
    return view === "cand" ? f[CI] : view === "base" ? f[BI] : f[BI] + f[CI];
  }
  function name(i) { return i === 0 ? "all" : D.names[F[i][NAME]]; }
  // Label: the function without its package path ("net/http.(*conn).serve" -> "http.(*conn).serve").
  function short(s) {
    var p = s.indexOf("(");
    var head = p >= 0 ? s.slice(0, p) : s;
    var k = head.lastIndexOf("/");
    return k >= 0 ? s.slice(k + 1) : s;
  }
  function pct(x) { return (x * 100).toFixed(2) + "%"; }
  function pt(x) { return (x >= 0 ? "+" : "") + (x * 100).toFixed(2) + " pt"; }
  function q(x) { return x < 0 ? "not tested" : "q = " + (x < 1e-3 ? x.toExponential(1) : x.toFixed(3)); }

  var cw = (function () {
    var s = document.createElement("span");
    s.style.visibility = "hidden";
    s.style.position = "absolute";
    s.textContent = "MMMMMMMMMMMMMMMMMMMM";
    flame.appendChild(s);
    var w = s.getBoundingClientRect().width / 20;
    flame.removeChild(s);
    return w > 0 ? w : 7.2;
  })();

  function fill(i) { return F[i][color === "self" ? FILL_SELF : FILL]; }

  function box(frag, i, x, w, d, anc) {
    var e = document.createElement("div");
    var cls = "fr";
    if (dark[fill(i)]) cls += " dark";
    if (anc) cls += " anc";
    if (culprit[i]) cls += " culprit";
    if (matches && matches[i]) cls += " match";
    e.className = cls;
    e.style.left = x.toFixed(1) + "px";
    e.style.top = d * H + "px";
    e.style.width = Math.max(w, 1).toFixed(1) + "px";
    e.style.background = D.fills[fill(i)];
    e.setAttribute("data-id", i);
    e.setAttribute("data-name", name(i));
    if (i in primary) e.setAttribute("data-primary", primary[i]);
    var label = short(name(i));
    var n = Math.floor((w - 6) / cw);
    e.textContent = n >= label.length ? label : n >= 4 ? label.slice(0, n - 1) + "\u2026" : "";
    frag.appendChild(e);
  }

  function render() {
    var W = flame.clientWidth;
    var frag = document.createDocumentFragment();
    var anc = [];
    for (var p = zoom; p >= 0; p = F[p][PAR]) anc.unshift(p);
    anc.forEach(function (a, d) { box(frag, a, 0, W, d, a !== zoom); });
    var total = val(zoom);
    var scale = total > 0 ? W / total : 0;
    var maxd = anc.length - 1;
    var stack = [[zoom, 0, anc.length - 1]];
    while (stack.length) {
      var top = stack.pop(), x = top[1], d = top[2];
      var ks = kids[top[0]];
      for (var k = 0; k < ks.length; k++) {
        var c = ks[k], w = val(c) * scale;
        if (w >= 0.5) {
          box(frag, c, x, w, d + 1, false);
          if (d + 1 > maxd) maxd = d + 1;
          stack.push([c, x, d + 1]);
        }
        x += w;
      }
    }
    flame.textContent = "";
    flame.style.height = (maxd + 1) * H + "px";
    flame.appendChild(frag);
  }

  function describe(i) {
    var f = F[i];
    return name(i) + " | inclusive " + pct(f[BI]) + " \u2192 " + pct(f[CI]) + ", " + pt(f[CI] - f[BI]) + ", " + q(f[QI]) +
      " | self " + pct(f[BS]) + " \u2192 " + pct(f[CS]) + ", " + pt(f[CS] - f[BS]) + ", " + q(f[QS]);
  }

  function row(t, b, c, qq) {
    var d = c - b;
    return "<tr><td>" + t + "</td><td>" + pct(b) + " \u2192 " + pct(c) + "</td><td class=\"" + (d > 0 ? "up" : d < 0 ? "down" : "") + "\">" +
      pt(d) + "</td><td>" + q(qq) + "</td></tr>";
  }
  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

  flame.addEventListener("mousemove", function (ev) {
    var e = ev.target.closest ? ev.target.closest(".fr") : null;
    if (!e) { tip.hidden = true; return; }
    var i = +e.getAttribute("data-id"), f = F[i];
    tip.innerHTML = "<div class=\"nm\">" + esc(name(i)) + (culprit[i] ? " <span class=\"badge fail\">culprit</span>" : "") + "</div>" +
      "<table>" + row("inclusive", f[BI], f[CI], f[QI]) + row("self", f[BS], f[CS], f[QS]) + "</table>" +
      "<div>samples: baseline " + f[BSAM] + ", candidate " + f[CSAM] + " \u00b7 values: " + esc(D.unit) + "</div>";
    tip.hidden = false;
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) x = Math.max(4, ev.clientX - r.width - 14);
    if (y + r.height > window.innerHeight - 4) y = Math.max(4, ev.clientY - r.height - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
    details.textContent = describe(i);
  });
  flame.addEventListener("mouseleave", function () { tip.hidden = true; });
  flame.addEventListener("click", function (ev) {
    var e = ev.target.closest ? ev.target.closest(".fr") : null;
    if (!e) return;
    zoom = +e.getAttribute("data-id");
    render();
  });
  document.getElementById("reset").addEventListener("click", function () { zoom = 0; render(); });
  Array.prototype.forEach.call(document.querySelectorAll("input[name=view]"), function (r) {
    r.addEventListener("change", function () { view = r.value; render(); updateMatched(); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[name=color]"), function (r) {
    r.addEventListener("change", function () {
      color = r.value;
      legend.textContent = (color === "self" ? D.legend_self : D.legend) + ". Values: " + D.unit + ".";
      render();
    });
  });

  function updateMatched() {
    if (!matches) { matched.textContent = ""; return; }
    var sum = 0;
    for (var i = 1; i < F.length; i++) {
      if (!matches[i]) continue;
      var p = F[i][PAR], covered = false;
      for (; p > 0; p = F[p][PAR]) if (matches[p]) { covered = true; break; }
      if (!covered) sum += val(i);
    }
    var t = val(0);
    matched.textContent = "matched " + (t > 0 ? (100 * sum / t).toFixed(1) : "0") + "% of the " +
      (view === "cand" ? "candidate" : view === "base" ? "baseline" : "both sides");
  }
  document.getElementById("search").addEventListener("input", function (ev) {
    var s = ev.target.value;
    if (!s) { matches = null; } else {
      var re;
      try { re = new RegExp(s); } catch (e) { re = { test: function (n) { return n.indexOf(s) >= 0; } }; }
      matches = {};
      for (var i = 1; i < F.length; i++) if (re.test(name(i))) matches[i] = true;
    }
    render();
    updateMatched();
  });
  // Culprit path steps zoom to that frame on the culprit's primary path.
  Array.prototype.forEach.call(document.querySelectorAll("ol.path li"), function (li) {
    li.addEventListener("click", function () {
      var c = D.culprits[+li.parentNode.getAttribute("data-culprit")];
      if (!c || !c.frames.length) return;
      var want = li.querySelector("code").textContent;
      for (var p = c.frames[0]; p >= 0; p = F[p][PAR]) {
        if (name(p) === want) { zoom = p; render(); flame.scrollIntoView({ block: "nearest" }); return; }
      }
    });
  });
  var pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(render, 100);
  });
  render();
})();
