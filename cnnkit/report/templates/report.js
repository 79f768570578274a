// cnnkit report: filter, sort and page the gallery in the browser. No library, no network.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const read = (id) => JSON.parse($(id).textContent);
  const entries = read("entries");
  const thumbs = read("thumbs");
  const task = read("meta").task;
  let page = 0;
  let shown = entries;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // a video frame's name says which frame (its record names the video); a tracked box its track id
  const named = (e) => (e.at ? e.n + " · " + e.at : e.n);
  const track = (e, k) => (e.k && e.k[k] !== null && e.k[k] !== undefined ? "#" + e.k[k] + " " : "");

  function caption(e) {
    const cap = el("figcaption");
    cap.appendChild(el("div", { class: "muted", title: e.p }, named(e)));
    if (!e.ok) { cap.appendChild(el("div", { class: "bad" }, "failed: " + e.e)); return cap; }
    const tags = el("div");
    const shownLabels = e.l.slice(0, task === "classify" ? 3 : 6);
    shownLabels.forEach((label, k) => {
      const score = e.ss[k] !== undefined ? " " + e.ss[k].toFixed(2) : (e.f && e.f[k] !== undefined ? " " + (100 * e.f[k]).toFixed(0) + "%" : "");
      tags.appendChild(el("span", { class: "tag" }, track(e, k) + label + score));
    });
    if (e.l.length > shownLabels.length) tags.appendChild(el("span", { class: "muted" }, " +" + (e.l.length - shownLabels.length)));
    if (!e.l.length) tags.appendChild(el("span", { class: "muted" }, "no predictions"));
    cap.appendChild(tags);
    if (e.v && e.v.why) cap.appendChild(el("div", { class: e.v.bad ? "bad" : "muted" }, e.v.why));
    if (e.note) cap.appendChild(el("div", { class: "muted" }, e.note));
    return cap;
  }

  function card(e) {
    const fig = el("figure", { class: "card" + (e.ok ? "" : " failed") + (e.v && e.v.bad ? " mistake" : ""), "data-i": e.i });
    const src = thumbs[e.i];
    if (src) fig.appendChild(el("img", { src: src, alt: named(e), loading: "lazy", width: "256", height: "170" }));
    else fig.appendChild(el("div", { class: "ph" }, e.ok ? "no picture" : e.e));
    fig.appendChild(caption(e));
    fig.addEventListener("click", () => open(e));
    return fig;
  }

  function open(e) {
    let dlg = $("detail");
    if (!dlg) { dlg = el("dialog", { id: "detail" }); document.body.appendChild(dlg); dlg.addEventListener("click", (ev) => { if (ev.target === dlg) dlg.close(); }); }
    dlg.replaceChildren();
    if (thumbs[e.i]) dlg.appendChild(el("img", { src: thumbs[e.i], alt: named(e) }));
    dlg.appendChild(el("div", {}, e.p + (e.at ? " · " + e.at : "") + (e.w ? "  (" + e.w + "×" + e.h + ")" : "")));
    const rows = e.l.map((label, k) => track(e, k) + label + (e.ss[k] !== undefined ? "  " + e.ss[k] : "")
      + (e.x && e.x[k] ? "  crossed " + e.x[k] : ""));
    dlg.appendChild(el("pre", {}, e.ok ? (rows.join("\n") || "no predictions") : "failed: " + e.e));
    if (e.c) dlg.appendChild(el("div", {}, "line counts so far: in " + (e.c.in ?? "–") + " · out " + (e.c.out ?? "–")));
    if (e.v) dlg.appendChild(el("div", {}, "truth: " + e.v.truth.join(", ") + (e.v.why ? "  ·  " + e.v.why : "")));
    const close = el("button", { type: "button" }, "close");
    close.addEventListener("click", () => dlg.close());
    dlg.appendChild(close);
    dlg.showModal();
  }

  function keep(e, f) {
    if (f.state === "ok" && !e.ok) return false;
    if (f.state === "failed" && e.ok) return false;
    if (f.state === "empty" && (!e.ok || e.l.length)) return false;
    if (f.state === "bad" && !(e.v && e.v.bad)) return false;
    if (f.cls && !e.l.includes(f.cls)) return false;
    if (f.text && !(e.at ? e.p + " · " + e.at : e.p).toLowerCase().includes(f.text)) return false;
    if ((f.min > 0 || f.max < 1) && (e.s === null || e.s < f.min || e.s > f.max)) return false;
    return true;
  }

  const sorters = {
    i: (a, b) => a.i - b.i,
    s: (a, b) => (a.s === null ? 2 : a.s) - (b.s === null ? 2 : b.s) || a.i - b.i,
    "-s": (a, b) => (b.s === null ? -1 : b.s) - (a.s === null ? -1 : a.s) || a.i - b.i,
    "-k": (a, b) => b.l.length - a.l.length || a.i - b.i,
    n: (a, b) => a.n.localeCompare(b.n) || a.i - b.i,
    "-v": (a, b) => ((b.v && b.v.bad) || 0) - ((a.v && a.v.bad) || 0) || a.i - b.i,
  };

  function filters() {
    return {
      cls: $("f-class").value, state: $("f-state").value, text: $("f-text").value.trim().toLowerCase(),
      min: parseFloat($("f-min").value) || 0, max: $("f-max").value === "" ? 1 : parseFloat($("f-max").value),
    };
  }

  function apply() {
    const f = filters();
    shown = entries.filter((e) => keep(e, f)).sort(sorters[$("f-sort").value] || sorters.i);
    page = 0;
    render();
  }

  function render() {
    const size = parseInt($("f-page").value, 10);
    const pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    const grid = $("grid");
    grid.replaceChildren(...shown.slice(page * size, (page + 1) * size).map(card));
    $("count").textContent = shown.length + " of " + entries.length + " image(s)";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  function fill(id, list) {
    const grid = $(id);
    if (grid) grid.replaceChildren(...list.map(card));
  }

  for (const id of ["f-class", "f-state", "f-sort", "f-page", "f-min", "f-max"]) $(id).addEventListener("change", apply);
  $("f-text").addEventListener("input", apply);
  $("prev").addEventListener("click", () => { page -= 1; render(); });
  $("next").addEventListener("click", () => { page += 1; render(); });

  // per-class table columns sort on a click of their header
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
      const body = table.tBodies[0];
      const value = (row) => { const t = row.cells[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
      const down = th.dataset.dir !== "down";
      th.dataset.dir = down ? "down" : "up";
      const rows = Array.from(body.rows).sort((a, b) => {
        const x = value(a), y = value(b);
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return down ? -c : c;
      });
      body.replaceChildren(...rows);
    }));
  });

  apply();
  fill("lowest-grid", entries.filter((e) => e.ok && e.s !== null).sort(sorters.s).slice(0, 24));
  fill("worst-grid", entries.filter((e) => e.v && e.v.bad).sort((a, b) => sorters["-v"](a, b) || (b.s || 0) - (a.s || 0)).slice(0, 24));
  document.body.dataset.ready = "1";
})();
