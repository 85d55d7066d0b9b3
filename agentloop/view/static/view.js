// agentloop view: live reload while a run is going (server), and the task table's filters,
// sorting and pages in the exported file (which has no server to ask).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (live) {
    var version = live.dataset.version;
    setInterval(function () {
      fetch(live.dataset.versionUrl, { cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : ""; })
        .then(function (v) { v = v.trim(); if (v && v !== version) { location.reload(); } })
        .catch(function () {});
    }, 2000);
  }

  document.querySelectorAll("form[data-client-for]").forEach(function (form) {
    var table = document.getElementById(form.dataset.clientFor);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var pager = document.querySelector('[data-pager-for="' + table.id + '"]');
    var count = form.parentNode.querySelector("[data-count]");
    var perPage = parseInt(table.dataset.perPage || "50", 10);
    var state = { sort: "index", desc: false, page: 0 };
    var shown = rows;

    function value(form, name) { var el = form.elements[name]; return el ? el.value : ""; }
    function matches(tr) {
      var d = tr.dataset, outcome = value(form, "outcome");
      if (outcome && outcome !== "all" && d.outcome !== outcome) { return false; }
      var v = parseFloat(d.value), lo = value(form, "rmin"), hi = value(form, "rmax");
      if (lo !== "" && v < parseFloat(lo)) { return false; }
      if (hi !== "" && v > parseFloat(hi)) { return false; }
      var diff = value(form, "difficulty"), stop = value(form, "stop"), q = value(form, "q").toLowerCase();
      if (diff && d.difficulty !== diff) { return false; }
      if (stop && d.stop !== stop) { return false; }
      return !q || d.text.indexOf(q) >= 0;
    }
    function key(tr) {
      var raw = tr.getAttribute("data-k-" + state.sort), n = parseFloat(raw);
      return isNaN(n) ? raw : n;
    }
    function apply() {
      shown = rows.filter(matches);
      shown.sort(function (a, b) {
        var x = key(a), y = key(b), c = x < y ? -1 : x > y ? 1 : 0;
        return state.desc ? -c : c;
      });
      var pages = Math.max(1, Math.ceil(shown.length / perPage));
      state.page = Math.min(state.page, pages - 1);
      rows.forEach(function (tr) { tr.hidden = true; });
      shown.forEach(function (tr, i) {
        body.appendChild(tr);
        tr.hidden = Math.floor(i / perPage) !== state.page;
      });
      if (count) { count.textContent = shown.length + " of " + rows.length + " tasks · page " + (state.page + 1) + " of " + pages; }
      if (pager) { pager.querySelector("[data-page-label]").textContent = "page " + (state.page + 1) + " of " + pages; }
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); state.page = 0; apply(); });
    form.addEventListener("change", function () { state.page = 0; apply(); });
    table.querySelectorAll("th button[data-sort]").forEach(function (b) {
      b.addEventListener("click", function () {
        state.desc = state.sort === b.dataset.sort ? !state.desc : false;
        state.sort = b.dataset.sort;
        apply();
      });
    });
    if (pager) {
      pager.querySelectorAll("button[data-page]").forEach(function (b) {
        b.addEventListener("click", function () {
          var pages = Math.max(1, Math.ceil(shown.length / perPage));
          state.page = Math.max(0, Math.min(pages - 1, state.page + parseInt(b.dataset.page, 10)));
          apply();
        });
      });
    }
    apply();
  });

  document.querySelectorAll("[data-groups-for]").forEach(function (nav) {
    var table = document.getElementById(nav.dataset.groupsFor);
    nav.querySelectorAll("button[data-group]").forEach(function (b) {
      b.addEventListener("click", function () {
        var g = b.dataset.group;
        nav.querySelectorAll("button[data-group]").forEach(function (o) { o.classList.toggle("active", o === b); });
        Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
          tr.hidden = !!g && tr.dataset.group !== g;
        });
      });
    });
  });
})();
