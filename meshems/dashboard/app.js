// meshems dashboard: reads /v1/events (server-sent events, same-origin, the login cookie or
// the client certificate), keeps the last hour of zone import vs its limit client-side.
"use strict";
(function () {
  const HOUR_S = 3600;
  const hist = { t: [], imp: [], lim: [] };
  const $ = (id) => document.getElementById(id);
  let chart = null;

  function fmt(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d === undefined ? 2 : d); }
  function text(el, s) { el.textContent = s; }
  function rows(tbody, list, cells) {
    tbody.replaceChildren(...list.map((item) => {
      const tr = document.createElement("tr");
      for (const c of cells(item)) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
      return tr;
    }));
  }
  function items(ul, list, cls) {
    ul.replaceChildren(...list.map((s) => {
      const li = document.createElement("li"); li.textContent = s.label; if (s.cls) li.className = s.cls; return li;
    }));
    if (!list.length) { const li = document.createElement("li"); li.textContent = cls || "none"; li.className = "empty"; ul.appendChild(li); }
  }

  function push(t, imp, lim) {
    if (hist.t.length && t <= hist.t[hist.t.length - 1]) return;
    hist.t.push(t); hist.imp.push(imp); hist.lim.push(lim);
    const cut = t - HOUR_S;
    let n = 0;
    while (n < hist.t.length && hist.t[n] < cut) n++;
    if (n) { hist.t.splice(0, n); hist.imp.splice(0, n); hist.lim.splice(0, n); }
  }

  function draw() {
    const data = [hist.t, hist.imp, hist.lim];
    if (chart === null) {
      const width = Math.max(300, $("chart").clientWidth || 600);
      chart = new uPlot({
        width: width, height: 220,
        scales: { x: { time: true } },
        series: [{}, { label: "import kW", stroke: "#1565c0", width: 2 },
                 { label: "limit kW", stroke: "#c62828", dash: [6, 4], width: 1.5 }],
        axes: [{}, { label: "kW" }],
      }, data, $("chart"));
    } else {
      chart.setData(data);
    }
  }

  function render(s) {
    text($("zone"), s.zone);
    text($("node"), "via " + s.node + " (" + s.role + ", term " + s.term + ")");
    items($("members"), s.members.map((m) => ({ label: m.id + (m.self ? " (this node)" : "") + " — " + m.role,
      cls: m.role === "leader" ? "leader" : m.role })));
    const g = s.grid;
    text($("import-kw"), fmt(g.import_kw));
    text($("limit-kw"), fmt(g.import_limit_kw));
    $("import-kw").className = g.import_kw !== null && g.import_limit_kw !== null && g.import_kw > g.import_limit_kw ? "over" : "";
    rows($("batteries").tBodies[0], s.batteries, (b) => [b.id, b.node, fmt(b.power_kw), fmt(b.soc_pct, 1)]);
    rows($("pv").tBodies[0], s.pv, (p) => [p.id, p.node, fmt(p.power_kw)]);
    text($("pv-kw"), "(" + fmt(s.pv_kw) + " kW)");
    items($("shed"), s.shed.map((x) => ({ label: x })), "none shed");
    items($("alarms"), s.alarms.map((x) => ({ label: x })), "no alarms");
    const d = s.dispatch;
    text($("cycle"), d ? "(cycle " + d.cycle + ", index " + d.index + ")" : "(none yet)");
    rows($("decisions").tBodies[0], d ? d.decisions : [], (x) => [x.target, x.controller, x.reason]);
    const cloud = $("cloud");
    cloud.replaceChildren();
    const c = s.cloud || { link: "no cloud configured" };
    for (const k of Object.keys(c)) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = String(c[k]);
      cloud.append(dt, dd);
    }
    push(s.t, g.import_kw, g.import_limit_kw);
    draw();
  }

  function connect() {
    const es = new EventSource("/v1/events");
    es.addEventListener("history", (ev) => {
      const h = JSON.parse(ev.data);
      for (let i = 0; i < h.t.length; i++) push(h.t[i], h.import_kw[i], h.import_limit_kw[i]);
      text($("chart-note"), h.t.length ? "history: " + h.t.length + " s kept by the node, then live"
                                       : "the node has no history yet: charting from now");
    });
    es.onmessage = (ev) => {
      $("link").className = "badge live"; text($("link"), "live");
      render(JSON.parse(ev.data));
    };
    es.onerror = () => { $("link").className = "badge down"; text($("link"), "disconnected — retrying"); };
  }
  connect();
})();
