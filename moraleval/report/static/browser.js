/* moraleval sample browser: filter the item x condition (x model) rows, open one to see its prompts, chain of
   thought, choice log-probs and the metric inputs, and recount any estimate from its items.
   Self-contained: rows come embedded in the page, or (when the page is served by `moraleval view`) from its
   /api/rows endpoint on the same origin.  Every model or data text is put in the page with textContent, never
   as HTML.  The filter state lives in the URL's #fragment. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("moraleval-data").textContent);
  var root = document.getElementById("browser");
  var PAGE = D.page_size || 50;
  var served = !D.rows && /^https?:$/.test(location.protocol);
  var rows = D.rows || null;
  var FILTERS = ["task", "model", "condition", "answer", "correct", "disagree", "flag", "q"];
  // Every lookup by a name that comes from data, report.json or the URL is an own-property lookup: a task called
  // "constructor" or "__proto__" (#task=constructor) must find nothing, not Object.prototype's members.
  var HAS = Object.prototype.hasOwnProperty;
  function own(obj, key) { return obj !== null && typeof obj === "object" && HAS.call(obj, key) ? obj[key] : undefined; }
  function dict() { return Object.create(null); }

  // ---------------------------------------------------------------------------------------- derived fields
  function answerOf(r) { var a = own(r.readout, r.choice); return a === undefined ? null : a; }
  function label(r, v) {
    var cv = r.choice_values || [], ch = r.choices || [];
    for (var k = 0; k < cv.length; k++) if (eqv(cv[k], v)) return String(ch[k]).trim();
    return v === null || v === undefined ? "(none)" : (typeof v === "string" ? v : JSON.stringify(v));
  }
  function derive(list) {
    var byCond = dict(), byModel = dict();
    list.forEach(function (r) {
      var a = answerOf(r);
      r._answer = label(r, a);
      var lab = own(r.values, "label");
      r._correct = (lab === undefined || a === null) ? null : eqv(a, lab);
      var kc = [r.task, r.model || "", r.row, r.variant].join("\u0000");
      var km = [r.task, r.condition, r.row, r.variant].join("\u0000");
      (byCond[kc] = byCond[kc] || dict())[r._answer] = 1;
      (byModel[km] = byModel[km] || dict())[r._answer] = 1;
      r._kc = kc; r._km = km;
    });
    list.forEach(function (r) {
      r._dc = Object.keys(byCond[r._kc]).length > 1;
      r._dm = Object.keys(byModel[r._km]).length > 1;
    });
  }
  if (rows) derive(rows);

  // --------------------------------------------------------------------------------------------- URL state
  function readState() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    var s = { g: dict() };
    p.forEach(function (v, k) {
      if (k.indexOf("g.") === 0) s.g[k.slice(2)] = v; else if (k !== "g") s[k] = v;
    });
    if (s.est !== undefined) applyEstimate(s, D.estimates[+s.est]);
    if (s.cmp !== undefined) applyComparison(s, D.comparisons[+s.cmp]);
    return s;
  }
  function applyEstimate(s, e) {
    if (!e) return;
    s.task = e.task; if (e.model) s.model = e.model; s.condition = e.condition;
    Object.keys(e.group || {}).forEach(function (k) {
      if (k === "condition" || k === "task") return; s.g[k] = String(e.group[k]);
    });
  }
  function applyComparison(s, c) {
    if (!c) return;
    s.task = c.task; if (c.model) s.model = c.model; s.condition = c.treatment + "," + c.baseline;
    Object.keys(c.group || {}).forEach(function (k) {
      if (k === "condition" || k === "task") return; s.g[k] = String(c.group[k]);
    });
  }
  function writeState(s) {
    var p = new URLSearchParams();
    if (s.est !== undefined) p.set("est", s.est);
    else if (s.cmp !== undefined) p.set("cmp", s.cmp);
    else {
      FILTERS.forEach(function (k) { if (s[k]) p.set(k, s[k]); });
      Object.keys(s.g).sort().forEach(function (k) { if (s.g[k]) p.set("g." + k, s.g[k]); });
    }
    if (s.page && +s.page > 0) p.set("page", s.page);
    if (s.open !== undefined) p.set("open", s.open);
    var h = "#" + p.toString();
    if (location.hash !== h) history.replaceState(null, "", h === "#" ? location.pathname + location.search : h);
  }

  // ------------------------------------------------------------------------------------------- filtering
  function strv(v) { return typeof v === "string" ? v : JSON.stringify(v); }
  function matches(r, s) {
    if (s.task && r.task !== s.task) return false;
    if (s.model && (r.model || "") !== s.model) return false;
    if (s.condition && s.condition.split(",").indexOf(r.condition) < 0) return false;
    if (s.answer && r._answer !== s.answer) return false;
    if (s.correct === "yes" && r._correct !== true) return false;
    if (s.correct === "no" && r._correct !== false) return false;
    if (s.disagree === "conditions" && !r._dc) return false;
    if (s.disagree === "models" && !r._dm) return false;
    if (s.flag && own(own(r.readout, "items"), s.flag) !== true) return false;  // an item definition true here
    for (var k in s.g) {
      if (!s.g[k]) continue;
      var v = own(r.values, k);
      if (v === undefined || strv(v) !== s.g[k]) return false;
    }
    if (s.q) {
      if (!r._text) r._text = JSON.stringify([r.prompts, r.generated, r.values]).toLowerCase();
      if (r._text.indexOf(s.q.toLowerCase()) < 0) return false;
    }
    return true;
  }
  function query(s, extra) {
    var p = new URLSearchParams();
    FILTERS.forEach(function (k) { if (s[k]) p.set(k, s[k]); });
    Object.keys(s.g).forEach(function (k) { if (s.g[k]) p.set("g." + k, s.g[k]); });
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p.toString();
  }
  function fetchRows(s, offset, limit) {
    if (rows) {
      var hit = rows.filter(function (r) { return matches(r, s); });
      return Promise.resolve({ total: hit.length, rows: limit === "all" ? hit : hit.slice(offset, offset + limit) });
    }
    if (!served) return Promise.resolve(null);
    var extra = { offset: offset, limit: limit };
    if (limit === "all") extra.fields = "metric";  // the recount needs the metric inputs, not the prompts
    return fetch("api/rows?" + query(s, extra)).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error(t.trim() || "the server answered " + r.status); });
      return r.json();
    });
  }

  // ------------------------------------------------------------------ the metric formulas, evaluated in JS
  // Mirrors moraleval.measurement: a missing value is `undefined`; the literal `none` is null; comparisons are
  // false when a side is missing; arithmetic on a missing value is missing; aggregates leave missing values out.
  function eqv(a, b) {
    if (a === undefined || b === undefined || a === null || b === null) return false;
    var na = typeof a === "number" || typeof a === "boolean", nb = typeof b === "number" || typeof b === "boolean";
    if (na && nb) return Number(a) === Number(b);
    if (na !== nb) return false;
    return JSON.stringify(a) === JSON.stringify(b);
  }
  function truth(x) {
    if (x === undefined || x === null) return false;
    if (typeof x === "number") return x !== 0 && !isNaN(x);
    if (typeof x === "string") return x.length > 0;
    if (Array.isArray(x)) return x.length > 0;
    return !!x;
  }
  function isNone(e) { return e && Object.prototype.hasOwnProperty.call(e, "lit") && e.lit === null; }
  function eqNone(a, b, ea, eb) {
    if (isNone(ea) && isNone(eb)) return true;
    if (isNone(ea)) return b === undefined;
    if (isNone(eb)) return a === undefined;
    return eqv(a, b);
  }
  function col(name, r) {
    if (name === r.choice) { var a = answerOf(r); return a === null ? undefined : a; }
    var v = own(r.values, name);
    if (v !== undefined) return v === null ? undefined : v;
    if (name === "condition") return r.condition;
    if (name === "task") return r.task;
    return undefined;
  }
  function fin(x) { return typeof x === "number" && isFinite(x) ? x : undefined; }
  function num(x) { return typeof x === "boolean" ? Number(x) : x; }
  function item(e, r) {
    if ("lit" in e) return e.lit;
    if ("name" in e) return col(e.name, r);
    if ("attr" in e) { return own(item(e.obj, r), e.attr); }
    if ("index" in e) { return own(item(e.obj, r), item(e.index, r)); }
    if ("unary" in e) {
      var x = item(e.x, r);
      if (e.unary === "not") return !truth(x);
      return x === undefined || x === null ? undefined : -num(x);
    }
    if ("bin" in e) {
      var a = item(e.l, r), b = item(e.r, r);
      if (a === undefined || b === undefined || a === null || b === null) return undefined;
      a = num(a); b = num(b);
      var v = e.bin === "+" ? a + b : e.bin === "-" ? a - b : e.bin === "*" ? a * b : e.bin === "/" ? a / b :
        e.bin === "%" ? a - b * Math.floor(a / b) : NaN;
      return fin(v);
    }
    if ("cmp" in e) {
      var op = e.cmp, l = item(e.l, r);
      if (op === "in" || op === "not in") {
        var hit;
        if (e.r.list || Array.isArray(e.r.lit)) {
          var els = e.r.list || e.r.lit.map(function (v) { return { lit: v }; });
          hit = els.some(function (el) { return eqNone(l, item(el, r), e.l, el); });
        } else {  // a column: a record (its keys) or a list (its elements)
          var box = item(e.r, r);
          if (box === undefined || box === null) return undefined;
          hit = Array.isArray(box) ? box.some(function (x) { return eqv(l, x); }) :
            (typeof box === "object" ? Object.prototype.hasOwnProperty.call(box, strv(l)) :
              (typeof box === "string" && typeof l === "string" && box.indexOf(l) >= 0));
        }
        return op === "in" ? hit : (!hit && l !== undefined);
      }
      var rr = item(e.r, r);
      if (op === "==") return eqNone(l, rr, e.l, e.r);
      if (op === "!=") {
        if (isNone(e.l) || isNone(e.r)) return !eqNone(l, rr, e.l, e.r);
        return l !== undefined && rr !== undefined && !eqv(l, rr);
      }
      if (l === undefined || rr === undefined || l === null || rr === null) return false;
      l = num(l); rr = num(rr);
      return op === "<" ? l < rr : op === "<=" ? l <= rr : op === ">" ? l > rr : op === ">=" ? l >= rr : false;
    }
    if ("bool" in e) {
      var p = truth(item(e.l, r)), q = truth(item(e.r, r));
      return e.bool === "and" ? p && q : p || q;
    }
    if ("then" in e) return truth(item(e["if"], r)) ? item(e.then, r) : item(e["else"], r);
    if ("list" in e) return e.list.map(function (x) { return item(x, r); });
    if ("call" in e) return itemCall(e, r);
    throw new Error("unsupported expression");
  }
  // The functions this page recounts, one entry a name of the metric language's vocabulary: the page embeds the
  // vocabulary's list with each function's arity (D.functions, from vocabulary.browser_names()), and a test holds
  // the names below equal to it.  kind "elementwise": f(values of the arguments) per item, or on numbers;
  // "choice": f(row, indices of the options with the asked value) per item; "aggregate": f(arguments, the
  // cell's items where `where` holds).
  var FUNCTIONS = {
    abs: { kind: "elementwise", f: function (xs) { return Math.abs(xs[0]); } },
    exp: { kind: "elementwise", f: function (xs) { return Math.exp(xs[0]); } },
    log: { kind: "elementwise", f: function (xs) { return Math.log(xs[0]); } },
    sqrt: { kind: "elementwise", f: function (xs) { return Math.sqrt(xs[0]); } },
    min: { kind: "elementwise", f: function (xs) { return Math.min.apply(null, xs); } },
    max: { kind: "elementwise", f: function (xs) { return Math.max.apply(null, xs); } },
    prob: { kind: "choice", f: function (r, ks) {
      var probs = (r.readout || {}).probs || [];
      return ks.reduce(function (s, k) { return s + Number(probs[k]); }, 0);
    } },
    logprob: { kind: "choice", f: function (r, ks) {
      var lps = r.logprobs || [];
      var m = Math.max.apply(null, ks.map(function (k) { return Number(lps[k]); }));
      if (!isFinite(m)) m = 0;
      return m + Math.log(ks.reduce(function (s, k) { return s + Math.exp(Number(lps[k]) - m); }, 0));
    } },
    // a choice's whole distribution (ks unused), in the order its options are written
    dist: { kind: "choice", f: function (r) {
      var probs = (r.readout || {}).probs;
      return probs ? writtenOrder(probs, r.rotation) : undefined;
    } },
    // per-item vectors (each normalised to sum 1, as scipy does); undefined where the measure is
    jsd: { kind: "vector", f: function (xs) {
      var pq = pairOf(xs[0], xs[1]);
      if (!pq) return NaN;
      var d = 0;
      for (var i = 0; i < pq[0].length; i++) {
        var m = (pq[0][i] + pq[1][i]) / 2;
        if (pq[0][i] > 0) d += pq[0][i] * Math.log(pq[0][i] / m) / 2;
        if (pq[1][i] > 0) d += pq[1][i] * Math.log(pq[1][i] / m) / 2;
      }
      return Math.sqrt(Math.max(d / logBase(xs[2]), 0));
    } },
    kl: { kind: "vector", f: function (xs) {
      var pq = pairOf(xs[0], xs[1]);
      if (!pq) return NaN;
      var d = 0;
      for (var i = 0; i < pq[0].length; i++) {
        if (pq[0][i] > 0 && pq[1][i] === 0) return NaN;
        if (pq[0][i] > 0) d += pq[0][i] * Math.log(pq[0][i] / pq[1][i]);
      }
      return d / logBase(xs[2]);
    } },
    tv: { kind: "vector", f: function (xs) {
      var pq = pairOf(xs[0], xs[1]);
      return pq ? pq[0].reduce(function (a, x, i) { return a + Math.abs(x - pq[1][i]); }, 0) / 2 : NaN;
    } },
    entropy: { kind: "vector", f: function (xs) {
      var p = Array.isArray(xs[0]) ? normalised(xs[0]) : null;
      return p ? -p.reduce(function (a, x) { return a + (x > 0 ? x * Math.log(x) : 0); }, 0) / logBase(xs[1]) : NaN;
    } },
    len: { kind: "vector", f: function (xs) { return Array.isArray(xs[0]) ? xs[0].length : NaN; } },
    count: { kind: "aggregate", f: function (args, sel) {
      return sel.filter(function (r) { return !args.length || truth(item(args[0], r)); }).length;
    } },
    mean: { kind: "aggregate", f: function (args, sel) { var t = total(args[0], sel); return t.k ? t.s / t.k : NaN; } },
    sum: { kind: "aggregate", f: function (args, sel) { return total(args[0], sel).s; } },
    pearson: { kind: "aggregate", f: function (args, sel) {
      var xs = [], ys = [];
      sel.forEach(function (r) {
        var x = item(args[0], r), y = item(args[1], r);
        if (x === undefined || y === undefined || x === null || y === null) return;
        xs.push(Number(x)); ys.push(Number(y));
      });
      var n = xs.length;
      if (n < 2) return NaN;
      var mx = xs.reduce(function (a, b) { return a + b; }, 0) / n, my = ys.reduce(function (a, b) { return a + b; }, 0) / n;
      var sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
      for (var i = 0; i < n; i++) {
        var a = xs[i] - mx, b = ys[i] - my; sx += a; sy += b; sxx += a * a; syy += b * b; sxy += a * b;
      }
      var vx = n * sxx - sx * sx, vy = n * syy - sy * sy, cov = n * sxy - sx * sy;
      if (vx <= 1e-10 * n * sxx || vy <= 1e-10 * n * syy) return NaN;
      return Math.max(-1, Math.min(1, cov / Math.sqrt(vx * vy)));
    } },
    var: { kind: "aggregate", f: function (args, sel) { return variance(values(args[0], sel)); } },
    std: { kind: "aggregate", f: function (args, sel) { return Math.sqrt(variance(values(args[0], sel))); } },
    median: { kind: "aggregate", f: function (args, sel) { return quantile(values(args[0], sel), 0.5); } },
    quantile: { kind: "aggregate", f: function (args, sel) {
      return quantile(values(args[0], sel), Number(args[1] && "lit" in args[1] ? args[1].lit : NaN));
    } }
  };
  // two vectors of one length, each a distribution once normalised, or null (as the measure stage's rules)
  function pairOf(p, q) {
    if (!Array.isArray(p) || !Array.isArray(q) || p.length !== q.length || !p.length) return null;
    if (!p.every(isNum) || !q.every(isNum)) return null;
    var a = normalised(p), b = normalised(q);
    return a && b ? [a, b] : null;
  }
  function logBase(b) { return Math.log(b === undefined || b === null ? 2 : Number(b)); }
  // the defined numbers of an argument over the selected items
  function values(arg, sel) {
    var xs = [];
    sel.forEach(function (r) {
      var x = item(arg, r);
      if (x === undefined || x === null || (typeof x === "number" && isNaN(x))) return;
      xs.push(Number(x));
    });
    return xs;
  }
  // the sample variance (n - 1), as the measure stage's var()
  function variance(xs) {
    var n = xs.length;
    if (n < 2) return NaN;
    var m = xs.reduce(function (a, b) { return a + b; }, 0) / n;
    return xs.reduce(function (a, x) { return a + (x - m) * (x - m); }, 0) / (n - 1);
  }
  // numpy's default quantile: linear interpolation between the order statistics
  function quantile(xs, q) {
    if (!xs.length || !(q >= 0 && q <= 1)) return NaN;
    var s = xs.slice().sort(function (a, b) { return a - b; });
    var h = (s.length - 1) * q, lo = Math.floor(h), hi = Math.min(lo + 1, s.length - 1);
    return s[lo] + (h - lo) * (s[hi] - s[lo]);
  }
  // the sum and count of an argument over items, leaving missing values out (mean, sum)
  function total(arg, sel) {
    var s = 0, k = 0;
    sel.forEach(function (r) {
      var x = item(arg, r);
      if (x === undefined || x === null || (typeof x === "number" && isNaN(x))) return;
      s += Number(x); k += 1;
    });
    return { s: s, k: k };
  }
  // a called function: in the page's vocabulary list, implemented here, given as many arguments as it takes
  function lookup(f, nargs) {
    var arity = Object.prototype.hasOwnProperty.call(D.functions || {}, f) ? D.functions[f] : null;
    if (!arity) throw new Error("unknown function " + f + "()");
    var fn = Object.prototype.hasOwnProperty.call(FUNCTIONS, f) ? FUNCTIONS[f] : null;
    if (!fn) throw new Error("this page cannot recount " + f + "()");
    if (nargs < arity[0] || nargs > arity[1]) {
      throw new Error(f + "() takes " + (arity[0] === arity[1] ? arity[0] : arity[0] + " to " + arity[1]) +
        " argument(s), not " + nargs);
    }
    return fn;
  }
  function itemCall(e, r) {
    var args = e.args || [], fn = lookup(e.call, args.length);
    if (fn.kind === "choice" && args.length === 1) return fn.f(r, null);  // a whole distribution
    if (fn.kind === "vector") {
      var vs = args.map(function (a) { return item(a, r); });
      if (vs.some(function (x) { return x === undefined || x === null; })) return undefined;
      return fin(fn.f(vs));
    }
    if (fn.kind === "choice") {
      var v = item(args[1], r);
      if (v === undefined) return undefined;
      var cv = r.choice_values || [], ks = [];
      for (var k = 0; k < cv.length; k++) if (eqNone(cv[k], v, null, args[1])) ks.push(k);
      if (!ks.length) return undefined;
      return fin(fn.f(r, ks));
    }
    if (fn.kind !== "elementwise") throw new Error(e.call + "() is an aggregate: it has no value per item");
    var xs = args.map(function (a) { return item(a, r); });
    if (xs.some(function (x) { return x === undefined || x === null; })) return undefined;
    return fin(fn.f(xs.map(num)));
  }
  function usable(r) { var ro = r.readout || {}; return (ro.status || "ok") === "ok" && !!ro.probs; }
  function aggregate(e, fn, items) {
    var where = e.where;
    var sel = items.filter(function (r) { return !where || truth(item(where, r)); });
    return fn.f(e.args || [], sel);
  }
  function scalar(e, items) {
    if ("lit" in e) return e.lit;
    if ("call" in e) {
      var fn = lookup(e.call, (e.args || []).length);
      if (fn.kind === "aggregate") return aggregate(e, fn, items);
      if (fn.kind === "elementwise") return fn.f((e.args || []).map(function (a) { return scalar(a, items); }));
      throw new Error(e.call + "() reads one item's scores: it has no value over the items");
    }
    if ("unary" in e) { var x = scalar(e.x, items); return e.unary === "not" ? !truth(x) : -x; }
    if ("bin" in e) {
      var a = scalar(e.l, items), b = scalar(e.r, items);
      if (e.bin === "/") return b === 0 ? NaN : a / b;
      return e.bin === "+" ? a + b : e.bin === "-" ? a - b : e.bin === "*" ? a * b : e.bin === "%" ? a % b : NaN;
    }
    if ("cmp" in e) { var l = scalar(e.l, items), r = scalar(e.r, items);
      return ({ "==": l === r, "!=": l !== r, "<": l < r, "<=": l <= r, ">": l > r, ">=": l >= r })[e.cmp]; }
    if ("bool" in e) { var p = truth(scalar(e.l, items)); var q = truth(scalar(e.r, items)); return e.bool === "and" ? p && q : p || q; }
    if ("then" in e) return truth(scalar(e["if"], items)) ? scalar(e.then, items) : scalar(e["else"], items);
    throw new Error("cannot evaluate this formula over items");
  }
  function metricExpr(task, metric) { return own(own(D.metrics, task), metric); }
  function inGroup(r, g) {
    return Object.keys(g || {}).every(function (k) {
      if (k === "condition") return r.condition === g[k];
      if (k === "task") return r.task === g[k];
      return eqv(own(r.values, k), g[k]) || strv(own(r.values, k)) === strv(g[k]);
    });
  }
  function recountEstimate(e, items) {
    var mine = items.filter(function (r) {
      return r.task === e.task && r.condition === e.condition && (!e.model || r.model === e.model) &&
        inGroup(r, e.group) && usable(r);
    });
    return { value: scalar(metricExpr(e.task, e.metric), mine), n: mine.length };
  }
  function recountComparison(c, items) {
    function side(cond) {
      return items.filter(function (r) {
        return r.task === c.task && r.condition === cond && (!c.model || r.model === c.model) && inGroup(r, c.group) && usable(r);
      });
    }
    var t = side(c.treatment), b = side(c.baseline);
    var key = function (r) { return r.row + "\u0000" + r.variant; };
    var kt = dict(), kb = dict();
    t.forEach(function (r) { kt[key(r)] = 1; }); b.forEach(function (r) { kb[key(r)] = 1; });
    t = t.filter(function (r) { return kb[key(r)]; }); b = b.filter(function (r) { return kt[key(r)]; });
    var ex = metricExpr(c.task, c.metric);
    return { value: scalar(ex, t) - scalar(ex, b), n: t.length, treatment: scalar(ex, t), baseline: scalar(ex, b) };
  }
  function same(a, b) {
    if (typeof b !== "number") return (typeof a === "number" && isNaN(a)) && (b === null || b === "nan");
    return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  }
  window.moralevalRecount = function (kind, i) {  // for tests and the console
    var x = kind === "est" ? D.estimates[i] : D.comparisons[i];
    var s = { g: dict() };
    if (kind === "est") applyEstimate(s, x); else applyComparison(s, x);
    return fetchRows(s, 0, "all").then(function (res) {
      var all = res.rows;
      var r = kind === "est" ? recountEstimate(x, all) : recountComparison(x, all);
      r.reported = kind === "est" ? x.value : x.effect; r.same = same(r.value, r.reported);
      return r;
    });
  };

  // ------------------------------------------------------------------------------------------- rendering
  function el(tag, attrs, kids) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") n.textContent = attrs[k]; else if (k === "cls") n.className = attrs[k];
      else n.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (c) { if (c) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function fmt(x) { return typeof x === "number" ? (isNaN(x) ? "undefined" : x.toFixed(6)) : String(x); }
  function options(name, values, cur, all) {
    var s = el("select", { name: name, "data-filter": name, "aria-label": name });
    s.appendChild(el("option", { value: "", text: all || "(all)" }));
    values.forEach(function (v) { var o = el("option", { value: v, text: v }); if (v === cur) o.selected = true; s.appendChild(o); });
    return s;
  }
  var state = null;
  function render() {
    state = readState();
    var s = state;
    root.textContent = "";
    var tasks = Object.keys(D.tasks || {});
    var conds = s.task ? (own(D.tasks, s.task) || []) : tasks.reduce(function (a, t) { return a.concat(own(D.tasks, t)); }, [])
      .filter(function (v, i, a) { return a.indexOf(v) === i; });
    var f = el("div", { cls: "filters", role: "search" });
    f.appendChild(el("label", {}, ["task", options("task", tasks, s.task)]));
    if ((D.models || []).length) f.appendChild(el("label", {}, ["model", options("model", D.models, s.model)]));
    var cs = conds.slice(); if (s.condition && cs.indexOf(s.condition) < 0) cs.push(s.condition);
    f.appendChild(el("label", {}, ["condition", options("condition", cs, s.condition)]));
    var gcols = s.task ? (own(D.group_columns, s.task) || []) : [];
    gcols.forEach(function (c) {
      var vals = own(own(D.group_values, s.task), c) || [];
      var sel = options("g." + c, vals, s.g[c]); sel.setAttribute("data-group", c);
      f.appendChild(el("label", {}, [c, sel]));
    });
    Object.keys(s.g).forEach(function (c) {
      if (gcols.indexOf(c) < 0 && s.g[c]) f.appendChild(el("label", {}, [c, options("g." + c, [s.g[c]], s.g[c])]));
    });
    f.appendChild(el("label", {}, ["answer", options("answer", D.answers || [], s.answer)]));
    f.appendChild(el("label", {}, ["correct", options("correct", ["yes", "no"], s.correct)]));
    var dis = ["conditions"]; if ((D.models || []).length > 1) dis.push("models");
    f.appendChild(el("label", {}, ["disagree", options("disagree", dis, s.disagree, "(any)")]));
    var fl = flagNames(s.task); if (s.flag && fl.indexOf(s.flag) < 0) fl.push(s.flag);
    if (fl.length) f.appendChild(el("label", {}, ["flagged", options("flag", fl, s.flag, "(any)")]));
    var q = el("input", { type: "search", name: "q", "data-filter": "q", placeholder: "text in prompt/answer", value: s.q || "" });
    f.appendChild(el("label", {}, ["search", q]));
    var clear = el("button", { type: "button", text: "clear filters", id: "clear-filters" });
    f.appendChild(clear);
    root.appendChild(f);
    f.addEventListener("change", function (ev) {
      var t = ev.target, name = t.getAttribute("name");
      if (!name) return;
      var ns = { g: Object.assign(dict(), s.g) };
      FILTERS.forEach(function (k) { if (s[k]) ns[k] = s[k]; });
      if (name.indexOf("g.") === 0) ns.g[name.slice(2)] = t.value; else ns[name] = t.value;
      if (name === "task") ns.g = dict();
      writeState(ns); render();
    });
    clear.addEventListener("click", function () { writeState({ g: dict() }); render(); });
    var box = el("div", { id: "recount" });
    root.appendChild(box);
    var summary = el("div", { cls: "summary", id: "row-count", text: "loading…" });
    root.appendChild(summary);
    var table = el("table", { cls: "rows", id: "rows" });
    root.appendChild(table);
    var pager = el("div", { cls: "pager" });
    root.appendChild(pager);
    if (!rows && !served) {
      summary.textContent = "The samples are not embedded in this page (" + D.n_rows + " rows). Run `moraleval view " +
        "<report directory>` and open the address it prints.";
      return;
    }
    var page = +(s.page || 0);
    fetchRows(s, page * PAGE, PAGE).then(function (res) {  // served rows come with _answer, _correct, _dc, _dm
      summary.textContent = res.total + " of " + D.n_rows + " rows match" + (res.total > PAGE ?
        "; showing " + (page * PAGE + 1) + "–" + Math.min(res.total, (page + 1) * PAGE) : "");
      summary.setAttribute("data-total", res.total);
      drawRows(table, res.rows, gcols, s);
      var np = Math.ceil(res.total / PAGE);
      if (np > 1) {
        var prev = el("button", { type: "button", id: "prev-page", text: "◀ previous" });
        var next = el("button", { type: "button", id: "next-page", text: "next ▶" });
        prev.disabled = page <= 0; next.disabled = page >= np - 1;
        prev.onclick = function () { s.page = page - 1; delete s.open; writeState(s); render(); };
        next.onclick = function () { s.page = page + 1; delete s.open; writeState(s); render(); };
        pager.appendChild(prev); pager.appendChild(el("span", { text: "page " + (page + 1) + " of " + np })); pager.appendChild(next);
      }
    }).catch(function (err) { summary.textContent = "could not load rows: " + err.message; });
    if (s.est !== undefined || s.cmp !== undefined) showRecount(box, s);
  }
  function showRecount(box, s) {
    var isEst = s.est !== undefined, x = isEst ? D.estimates[+s.est] : D.comparisons[+s.cmp];
    if (!x) return;
    box.className = "recount";
    var what = isEst ? x.metric + " under " + x.condition : x.metric + ": " + x.treatment + " − " + x.baseline;
    var grp = Object.keys(x.group || {}).map(function (k) { return k + " = " + x.group[k]; }).join(", ");
    box.appendChild(el("div", {}, [el("strong", { text: (isEst ? "Estimate " : "Comparison ") + what }),
      " (" + x.task + (x.model ? ", model " + x.model : "") + (grp ? ", " + grp : "") + ")"]));
    var reported = isEst ? x.value : x.effect;
    box.appendChild(el("div", { text: "report.json: " + fmt(reported) + (isEst ? " (n = " + x.n + " items)" : " (n = " + x.n + " pairs)") }));
    box.appendChild(el("div", { cls: "muted", text: "formula: " + own(own(D.formulas, x.task), x.metric) }));
    (x.flags || []).forEach(function (f) { box.appendChild(el("div", { cls: "flag", text: "⚠ " + f.message })); });
    var out = el("div", { id: "recount-value", text: "recounting from the items…" });
    box.appendChild(out);
    window.moralevalRecount(isEst ? "est" : "cmp", isEst ? +s.est : +s.cmp).then(function (r) {
      out.textContent = "";
      out.appendChild(document.createTextNode("recounted in this page from the " + r.n + (isEst ? " items of this cell" : " paired items") + ": " + fmt(r.value) +
        (isEst ? "" : " (= " + fmt(r.treatment) + " − " + fmt(r.baseline) + ")") + " "));
      out.appendChild(el("span", { cls: r.same ? "match" : "mismatch", text: r.same ? "✓ equals report.json" : "✗ differs from report.json" }));
      out.setAttribute("data-value", String(r.value)); out.setAttribute("data-same", String(r.same));
    }).catch(function (err) { out.textContent = "recount failed: " + err.message; });
  }
  // The spec's boolean per-item definitions (`item low_mass = mass < 0.99`): each item is flagged by those true on it.
  function flagNames(task) {
    var by = D.item_flags || {}, out = [];
    Object.keys(by).forEach(function (t) {
      if (task && t !== task) return;
      (by[t] || []).forEach(function (nm) { if (out.indexOf(nm) < 0) out.push(nm); });
    });
    return out;
  }
  function flagsOf(r) {
    var items = own(r.readout, "items") || {};
    return Object.keys(items).filter(function (k) { return items[k] === true; });
  }
  function drawRows(table, list, gcols, s) {
    table.textContent = "";
    var showFlags = flagNames(s.task).length > 0;
    var cols = ["#", "task"].concat((D.models || []).length ? ["model"] : []).concat(["condition"]).concat(gcols)
      .concat(["answer", "p(answer)", "correct"]).concat(showFlags ? ["flagged"] : []);
    var head = el("tr", {}, cols.map(function (c) { return el("th", { scope: "col", text: c }); }));
    table.appendChild(el("thead", {}, [head]));
    var body = el("tbody");
    list.forEach(function (r) {
      var ro = r.readout || {};
      var a = answerOf(r), k = (r.choice_values || []).findIndex(function (v) { return eqv(v, a); });
      var p = k >= 0 && ro.probs ? Number(ro.probs[k]).toFixed(3) : "–";
      var flags = showFlags ? flagsOf(r) : [];
      var cells = [String(r.index), r.task].concat((D.models || []).length ? [r.model || ""] : []).concat([r.condition])
        .concat(gcols.map(function (c) { var v = own(r.values, c); return v === undefined ? "" : strv(v); }))
        .concat([r._answer, p, r._correct === null ? "–" : (r._correct ? "yes" : "no")])
        .concat(showFlags ? [flags.join(", ")] : []);
      var tr = el("tr", { "data-index": r.index, tabindex: "0" }, cells.map(function (c) { return el("td", { text: c }); }));
      var correctCell = tr.childNodes[cells.length - (showFlags ? 2 : 1)];
      if (r._correct !== null) correctCell.className = r._correct ? "yes" : "no";
      if (flags.length) tr.lastChild.className = "flagged";
      body.appendChild(tr);
      var toggle = function () {
        var open = tr.nextSibling && tr.nextSibling.classList && tr.nextSibling.classList.contains("detail-row");
        if (open) { tr.parentNode.removeChild(tr.nextSibling); tr.classList.remove("open"); delete s.open; }
        else { tr.parentNode.insertBefore(detail(r, cols.length), tr.nextSibling); tr.classList.add("open"); s.open = r.index; }
        writeState(s);
      };
      tr.addEventListener("click", toggle);
      tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter") toggle(); });
      if (s.open !== undefined && +s.open === r.index) { body.appendChild(detail(r, cols.length)); tr.classList.add("open"); }
    });
    table.appendChild(body);
  }
  function detail(r, span) {
    var td = el("td", { cls: "detail", colspan: span });
    var ro = r.readout || {};
    td.appendChild(el("div", { text: "row " + r.row + ", variant " + r.variant + ", resampling unit " + r.unit + ", request " + String(r.request).slice(0, 12) }));
    Object.keys(r.prompts || {}).forEach(function (k) {
      td.appendChild(el("div", { cls: "muted", text: "prompt (" + k + "), exactly as sent:" }));
      var pr = r.prompts[k];
      td.appendChild(el("pre", { cls: "prompt", text: typeof pr === "string" ? pr : JSON.stringify(pr, null, 2) }));
    });
    Object.keys(r.generated || {}).forEach(function (k) {
      td.appendChild(el("div", { cls: "muted", text: "generated (" + k + "):" }));
      td.appendChild(el("pre", { cls: "generated", text: r.generated[k] }));
    });
    var t = el("table", {}, [el("thead", {}, [el("tr", {}, ["option", "value", "log-prob", "probability", ""].map(function (h) { return el("th", { text: h }); }))])]);
    var tb = el("tbody");
    (r.choices || []).forEach(function (c, k) {
      var chosen = eqv((r.choice_values || [])[k], answerOf(r));
      tb.appendChild(el("tr", {}, [el("td", { text: JSON.stringify(c) }), el("td", { text: strv((r.choice_values || [])[k]) }),
        el("td", { text: r.logprobs ? Number(r.logprobs[k]).toFixed(4) : "–" }),
        el("td", { text: ro.probs ? Number(ro.probs[k]).toFixed(4) : "–" }), el("td", { text: chosen ? "← read out" : "" })]));
    });
    t.appendChild(tb);
    td.appendChild(t);
    distributionTables(r).forEach(function (x) { td.appendChild(x); });
    td.appendChild(el("div", { text: "answer read out (" + r.choice + "): " + r._answer + " — " + (ro.status || "") + (ro.source ? " (" + ro.source + ")" : "") }));
    td.appendChild(el("div", { cls: "muted", text: "metric inputs (the item's columns):" }));
    td.appendChild(el("pre", { cls: "values", text: JSON.stringify(r.values, null, 1) }));
    if (own(ro, "items")) {
      td.appendChild(el("div", { cls: "muted", text: "the spec's per-item definitions, on this item:" }));
      td.appendChild(el("pre", { cls: "item-values", text: JSON.stringify(ro.items, null, 1) }));
    }
    return el("tr", { cls: "detail-row" }, [td]);
  }
  // The model's distribution over the options beside every distribution the item carries: an entry of a record
  // column that is a list of numbers as long as the options (GlobalOpinionQA: each country's answer shares), with
  // 1 − the Jensen–Shannon distance (base 2) between the two, most similar first.  Texts go in as textContent.
  function writtenOrder(probs, rotation) {  // a rotated presentation put back in the order the options are written
    var k = probs.length, out = new Array(k), rot = +(rotation || 0);
    for (var i = 0; i < k; i++) out[(i + rot) % k] = Number(probs[i]);
    return out;
  }
  function isNum(x) { return typeof x === "number" && isFinite(x); }
  function normalised(v) {
    var t = v.reduce(function (a, b) { return a + b; }, 0);
    return t > 0 && v.every(function (x) { return x >= 0; }) ? v.map(function (x) { return x / t; }) : null;
  }
  function jsDistance(p, q) {  // as scipy.spatial.distance.jensenshannon(p, q, base=2)
    p = normalised(p); q = normalised(q);
    if (!p || !q) return NaN;
    var d = 0;
    for (var i = 0; i < p.length; i++) {
      var m = (p[i] + q[i]) / 2;
      if (p[i] > 0) d += 0.5 * p[i] * Math.log2(p[i] / m);
      if (q[i] > 0) d += 0.5 * q[i] * Math.log2(q[i] / m);
    }
    return Math.sqrt(Math.max(d, 0));
  }
  function barCell(x) {
    var cell = el("td", { cls: "num dist-cell" });
    var bar = el("span", { cls: "bar" });
    bar.style.width = (isNum(x) ? Math.max(0, Math.min(1, x)) * 100 : 0).toFixed(1) + "%";
    cell.appendChild(bar);
    cell.appendChild(el("span", { text: isNum(x) ? x.toFixed(3) : "–" }));
    return cell;
  }
  function distributionTables(r) {
    var ro = r.readout || {}, k = (r.choices || []).length, out = [];
    if (!ro.probs || ro.probs.length !== k || k < 2) return out;
    var model = writtenOrder(ro.probs, r.rotation);
    Object.keys(r.values || {}).sort().forEach(function (column) {
      var rec = r.values[column];
      if (!rec || typeof rec !== "object" || Array.isArray(rec)) return;
      var entries = Object.keys(rec).filter(function (key) {
        var v = rec[key];
        return Array.isArray(v) && v.length === k && v.every(isNum);
      }).map(function (key) {
        var sim = 1 - jsDistance(model, rec[key]);
        return { key: key, shares: normalised(rec[key]) || rec[key], sim: sim };
      });
      if (!entries.length) return;
      entries.sort(function (a, b) { return (isNaN(b.sim) ? -1 : b.sim) - (isNaN(a.sim) ? -1 : a.sim) || (a.key < b.key ? -1 : 1); });
      var head = ["", "1 − JSD"].concat((r.choices || []).map(function (c) { return String(c).trim(); }));
      var t = el("table", { cls: "dists", "data-column": column }, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", { scope: "col", text: h }); }))])]);
      var tb = el("tbody");
      var mine = el("tr", { cls: "model-dist" }, [el("th", { scope: "row", text: "the model (" + r.choice + ")" }), el("td", { cls: "num", text: "" })]);
      model.forEach(function (x) { mine.appendChild(barCell(x)); });
      tb.appendChild(mine);
      entries.forEach(function (e) {
        var tr = el("tr", {}, [el("th", { scope: "row", text: e.key }), el("td", { cls: "num", text: isNaN(e.sim) ? "–" : e.sim.toFixed(3) })]);
        e.shares.forEach(function (x) { tr.appendChild(barCell(x)); });
        tb.appendChild(tr);
      });
      t.appendChild(tb);
      out.push(el("div", { cls: "muted", text: "the model's distribution over the options (in the order written) beside " +
        column + " (each normalised to sum 1; 1 − JSD: one minus the Jensen–Shannon distance, base 2; most similar first):" }));
      out.push(t);
    });
    return out;
  }
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("a.est-link, a.cmp-link");
    if (!a) return;
    ev.preventDefault();
    var s = { g: dict() };
    if (a.hasAttribute("data-est")) s.est = a.getAttribute("data-est"); else s.cmp = a.getAttribute("data-cmp");
    writeState(s); render();
    document.getElementById("samples").scrollIntoView();
  });
  window.addEventListener("hashchange", render);
  render();
})();
