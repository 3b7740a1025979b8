(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  var form = document.getElementById("filters");
  var cells = document.querySelectorAll("[data-cell-id]");
  var grids = document.querySelectorAll("[data-grid-scenario]");
  var counter = document.getElementById("filter-count");
  var total = document.querySelectorAll("td.cell[data-cell-id]").length;

  function apply() {
    var verdicts = {};
    form.querySelectorAll("input[name=verdict]").forEach(function (cb) {
      verdicts[cb.value] = cb.checked;
    });
    var scenario = form.elements.scenario.value;
    var unexpectedOnly = form.elements.unexpected.checked;
    var shown = 0;
    cells.forEach(function (el) {
      var show = verdicts[el.dataset.verdict] !== false &&
        (scenario === "" || el.dataset.scenario === scenario) &&
        (!unexpectedOnly || el.dataset.ok === "false");
      el.classList.toggle("filtered", !show);
      if (show && el.classList.contains("cell")) { shown += 1; }
    });
    grids.forEach(function (grid) {
      grid.hidden = scenario !== "" && grid.dataset.gridScenario !== scenario;
    });
    root.classList.toggle("show-all", form.elements.details.checked);
    counter.textContent = shown + " of " + total + " cells shown";
  }

  function reveal() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (target) { target.scrollIntoView(); }
  }

  if (form) {
    form.hidden = false;
    form.addEventListener("change", apply);
    form.addEventListener("reset", function () { window.setTimeout(apply, 0); });
    apply();
  }
  window.addEventListener("hashchange", reveal);
  reveal();
}());
