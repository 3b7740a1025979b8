(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  var bar = document.getElementById("bar");
  var form = document.getElementById("filters");
  var counter = document.getElementById("filter-count");
  var wrap = document.querySelector(".grid-wrap");
  var table = wrap ? wrap.querySelector("table") : null;
  var gridCells = document.querySelectorAll("table.overview td[data-cell-id]");
  var windows = {};
  try {
    windows = JSON.parse(document.getElementById("windows").textContent || "{}");
  } catch (e) {
    windows = {};
  }

  // Jump targets land below the sticky bar; the grid scrolls on its own only when it
  // does not fit the page's width (then its header row and first column stay put).
  function layout() {
    root.style.setProperty("--bar-h", (bar ? bar.offsetHeight : 0) + "px");
    if (wrap && table) {
      wrap.classList.remove("fits");
      wrap.classList.toggle("fits", table.scrollWidth <= wrap.clientWidth + 1);
    }
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  var ORDER = ["section", "subsection", "field", "sentinel", "other", "error", "cause"];

  function hex8(n) { return ("0000000" + n.toString(16)).slice(-8); }

  // An annotated byte view: 16 bytes a row, runs of bytes under the same marks in one
  // span (its title names them), the marks that start in a row beside it.
  function drawHex(holder) {
    if (holder.dataset.drawn) { return; }
    holder.dataset.drawn = "1";
    var w = windows[holder.dataset.window];
    if (!w) { return; }
    var focus = holder.dataset.focus !== undefined ? Number(holder.dataset.focus) : null;
    var start = w.s, n = w.h.length / 2, stop = start + n;
    var marks = w.m.map(function (m, i) {
      return { n: i + 1, off: m[0], end: m[1], kind: m[2], label: m[3] };
    });
    var t = el("table", "hex");
    var body = el("tbody");
    for (var row = start - (start % 16); row < stop; row += 16) {
      var tr = el("tr");
      tr.appendChild(el("td", "off", hex8(row)));
      var bytesTd = el("td", "bytes"), ascii = "";
      var run = null, runKey = null;
      for (var off = row; off < row + 16; off += 1) {
        var key, text, title = "";
        if (off < start || off >= stop) {
          key = "gap"; text = "  "; ascii += " ";
        } else {
          var b = parseInt(w.h.substr(2 * (off - start), 2), 16);
          ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
          var covering = marks.filter(function (m) { return m.off <= off && off < m.end; });
          var kinds = covering.map(function (m) { return m.kind; })
            .filter(function (k, i, a) { return a.indexOf(k) === i; })
            .sort(function (a, b) { return ORDER.indexOf(a) - ORDER.indexOf(b); });
          var starts = marks.some(function (m) { return m.off === off; });
          key = kinds.map(function (k) { return "m-" + k; }).join(" ") +
            (starts ? " start" : "") + (off === focus ? " focus" : "") +
            (kinds.indexOf("error") >= 0 ? " err" : "");
          text = w.h.substr(2 * (off - start), 2);
          title = covering.slice(-3).map(function (m) {
            return "[" + m.n + "] " + m.kind + " " + m.label;
          }).join("; ");
          key += "|" + title;
        }
        if (run && key === runKey && key.indexOf(" start") < 0) {
          run.textContent += " " + text;
        } else {
          if (run) { bytesTd.appendChild(run); bytesTd.appendChild(document.createTextNode(" ")); }
          run = el("span", "b " + key.split("|")[0], text);
          if (key !== "gap" && key.split("|")[1]) { run.title = key.split("|")[1]; }
          runKey = key;
        }
      }
      if (run) { bytesTd.appendChild(run); }
      tr.appendChild(bytesTd);
      tr.appendChild(el("td", "ascii", ascii));
      var notes = el("td", "notes");
      marks.filter(function (m) { return m.off >= row && m.off < row + 16; })
        .forEach(function (m, i) {
          if (i) { notes.appendChild(document.createTextNode("; ")); }
          notes.appendChild(el("sup", "mk", "[" + m.n + "]"));
          var kind = m.label.indexOf(m.kind) === 0 ? "" : m.kind + " ";
          notes.appendChild(document.createTextNode(" 0x" + m.off.toString(16) + " " + kind));
          notes.appendChild(el("code", "", m.label));
        });
      tr.appendChild(notes);
      body.appendChild(tr);
    }
    t.appendChild(body);
    var scroll = el("div", "scroll");
    scroll.appendChild(t);
    holder.appendChild(scroll);
    if (w.clip) { holder.appendChild(el("p", "none", w.clip + " further bytes of the window are not shown.")); }
    if (w.more) { holder.appendChild(el("p", "none", w.more + " further marks are not shown.")); }
  }

  function drawIn(container) {
    container.querySelectorAll(".hexview[data-window]").forEach(drawHex);
  }

  // A large report keeps its routine cells' details gzip-compressed in one block; a
  // stub section (data-lazy) gets its full content when it is opened.
  var lazyBlock = document.getElementById("lazy-details");
  var lazyDetails = null;

  function openLazy() {
    if (!lazyDetails) {
      try {
        var bin = atob(lazyBlock.textContent.trim());
        var bytes = new Uint8Array(bin.length);
        for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
        var inflated = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
        lazyDetails = new Response(inflated).text().then(JSON.parse);
      } catch (e) {
        lazyDetails = Promise.reject(e);
      }
    }
    return lazyDetails;
  }

  function filled(section) {
    if (!lazyBlock || !section.hasAttribute("data-lazy")) { return Promise.resolve(section); }
    return openLazy().then(function (all) {
      var html = all[section.id];
      if (html && section.hasAttribute("data-lazy")) {
        var t = document.createElement("template");
        t.innerHTML = html;
        var full = t.content.firstElementChild;
        section.className = full.className;
        section.innerHTML = full.innerHTML;
        section.removeAttribute("data-lazy");
      }
      return section;
    }, function () {
      // A browser without DecompressionStream (or a damaged block): say so in the stub.
      if (!section.querySelector(".lazy-failed")) {
        section.appendChild(el("p", "none lazy-failed", "This browser cannot open the " +
          "compressed detail; migmatrix analyze, or this report in a current browser, " +
          "shows the cause and the bytes."));
      }
      return section;
    });
  }

  function reveal() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (!target) { return; }
    if (!target.hasAttribute("data-lazy")) {
      drawIn(target);
      target.scrollIntoView();
      return;
    }
    target.scrollIntoView();
    filled(target).then(function (section) {
      drawIn(section);
      section.scrollIntoView();
    });
  }

  function shows(e, f) {
    return f.verdicts[e.dataset.verdict] !== false &&
      (f.scenario === "" || e.dataset.scenario === f.scenario) &&
      (!f.unexpected || e.dataset.ok === "false") &&
      (!f.known || e.dataset.known === "true");
  }

  // Hide the items of ``container`` the filters leave out; how many are left.
  function filterIn(container, selector, f) {
    var n = 0;
    container.querySelectorAll(selector).forEach(function (e) {
      var show = shows(e, f);
      e.hidden = !show;
      if (show) { n += 1; }
    });
    return n;
  }

  function emptyNote(section, empty) {
    var note = section ? section.querySelector(".filter-empty") : null;
    if (note) { note.hidden = !empty; }
  }

  // Filters hide cells, then every row, column, group and table left empty.
  function apply() {
    var f = { verdicts: {}, scenario: form.elements.scenario.value,
              unexpected: form.elements.unexpected.checked, known: form.elements.known.checked };
    form.querySelectorAll("input[name=verdict]").forEach(function (cb) {
      f.verdicts[cb.value] = cb.checked;
    });
    var shown = 0, columns = {};
    document.querySelectorAll("table.overview tbody tr").forEach(function (tr) {
      var n = 0;
      tr.querySelectorAll("td[data-cell-id]").forEach(function (td) {
        var show = shows(td, f);
        td.classList.toggle("filtered", !show);
        if (show) { n += 1; columns[td.dataset.col] = true; }
      });
      tr.hidden = n === 0;
      shown += n;
    });
    document.querySelectorAll("table.overview [data-col]").forEach(function (c) {
      c.classList.toggle("col-hidden", !columns[c.dataset.col]);
    });
    document.getElementById("grid-empty").hidden = shown > 0;
    if (wrap) { wrap.hidden = shown === 0; }
    var groups = 0;
    document.querySelectorAll("[data-known-group]").forEach(function (g) {
      var n = filterIn(g, "li[data-cell-id]", f);
      g.hidden = n === 0;
      if (n) { groups += 1; }
    });
    emptyNote(document.getElementById("known"), groups === 0);
    document.querySelectorAll("table[data-filter-table]").forEach(function (t) {
      var n = filterIn(t, "tbody tr[data-cell-id]", f);
      t.hidden = n === 0;
      emptyNote(t.parentNode, n === 0);
    });
    var all = form.elements.details.checked;
    root.classList.toggle("show-all", all);
    if (all) {
      var details = document.getElementById("details");
      var stubs = Array.prototype.slice.call(details.querySelectorAll("section[data-lazy]"));
      if (stubs.length) {
        Promise.all(stubs.map(filled)).then(function () { drawIn(details); });
      } else {
        drawIn(details);
      }
    }
    counter.textContent = shown + " of " + gridCells.length + " cells shown";
    layout();
  }

  if (form) {
    form.hidden = false;
    form.addEventListener("change", apply);
    form.addEventListener("reset", function () { window.setTimeout(apply, 0); });
    apply();
  }
  layout();
  window.addEventListener("resize", layout);
  window.addEventListener("hashchange", reveal);
  reveal();
}());
