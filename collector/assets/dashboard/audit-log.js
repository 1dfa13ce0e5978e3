// Settings > Audit Log: reads an org's audit log through the collector's JSON API.
//
// The page renders untrusted audit data, so it builds every element with createElement and sets
// text with textContent only; the Content-Security-Policy (with Trusted Types) backs that up.
// The API key lives in sessionStorage and goes out as a bearer token; nothing is fetched from
// anywhere but this collector.
'use strict';

(function () {
  const KEY_STORAGE = 'codestax.audit-log.api-key';
  const PAGE_SIZE = 50;
  const FACET_TOP = 50;
  const READ_ROLES = ['ORG_ADMIN', 'ORG_OWNER'];
  // The spec's categories, in the order of its table, with its names.
  const CATEGORIES = [
    ['auth', 'Authentication'],
    ['repository', 'Repositories'],
    ['scan', 'Scans'],
    ['finding', 'Findings'],
    ['team', 'Team'],
    ['settings', 'Settings'],
    ['integration', 'Integrations'],
    ['audit_log', 'Audit log'],
  ];
  const OUTCOMES = [['success', 'Success'], ['failure', 'Failure']];
  const SINGLE_FILTERS = ['q', 'user', 'action', 'repository', 'outcome', 'since', 'until'];
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const HOUR_MS = 3600 * 1000;
  const DAY_MS = 24 * HOUR_MS;
  const RELATIVE = /^(\d+)([smhdw])$/;
  const UNIT_MS = { s: 1000, m: 60000, h: HOUR_MS, d: DAY_MS, w: 7 * DAY_MS };
  const VIEWED = 'audit_log.viewed';
  const EXPORT_TYPES = { csv: 'text/csv', json: 'application/json', ndjson: 'application/x-ndjson' };

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    who: null,
    applied: emptyFilters(),
    cursor: null,
    shown: 0,
    total: 0,
    seq: 0,
    retention: null,
    // A relative `since` (`7d`) chosen by a preset: the date inputs then stay empty.
    relative: '',
    views: [],
    // The last line of the table when it is a run of views (a next page may continue it).
    lastGroup: null,
    streamTimer: null,
  };

  // ---------- small helpers ----------

  function emptyFilters() {
    return { q: '', category: [], user: '', action: '', repository: '', outcome: '', since: '', until: '' };
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === '') continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  // Replaces a node's children, skipping absent ones.
  function fill(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== ''));
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setText(node, text) {
    node.textContent = text || '';
    if (node.getAttribute('role') === 'alert' || node.classList.contains('error')) {
      show(node, Boolean(text));
    }
  }

  // 2026-11-27T13:05:09.123456Z -> 2026-11-27 13:05:09 UTC
  function formatTime(rfc3339) {
    if (typeof rfc3339 !== 'string') return '';
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00:00)$/.exec(rfc3339);
    if (m) return `${m[1]} ${m[2]} UTC`;
    const d = new Date(rfc3339);
    if (Number.isNaN(d.getTime())) return rfc3339;
    return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  // One line of a table cell: cut with an ellipsis when the column is narrow, the whole text in
  // its tooltip (a long email or IPv6 address never wraps mid-word).
  function clipped(text, extraClass, tag) {
    const value = String(text);
    return el(tag || 'span', { class: `clip${extraClass ? ` ${extraClass}` : ''}`, title: value, text: value });
  }

  function plural(n, one, many) {
    return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
  }

  function categoryLabel(value) {
    const found = CATEGORIES.find(([v]) => v === value);
    return found ? found[1] : value;
  }

  // ---------- the API ----------

  class ApiFailure extends Error {
    constructor(status, detail, what) {
      super((detail && detail.message) || `HTTP ${status}`);
      this.status = status;
      this.code = detail && detail.code;
      this.field = detail && detail.field;
      this.what = what;
    }
  }

  function orgBase() {
    return `/api/v1/orgs/${encodeURIComponent(state.who.org_id)}`;
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
    headers.Authorization = `Bearer ${state.token}`;
    let response;
    try {
      response = await fetch(path, {
        method: opts.method || 'GET',
        headers,
        body: opts.body,
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiFailure(0, { message: `could not reach the collector (${e.message})` }, opts.what);
    }
    return response;
  }

  async function errorOf(response, what) {
    let detail = null;
    try {
      const body = await response.json();
      detail = body && body.error;
    } catch (_) {
      detail = null;
    }
    const failure = new ApiFailure(response.status, detail, what);
    const retry = response.headers.get('Retry-After');
    if (retry) failure.retryAfter = retry;
    return failure;
  }

  async function apiJson(path, options) {
    const response = await api(path, options);
    const what = options && options.what;
    if (!response.ok) throw await errorOf(response, what);
    return response.json();
  }

  // A sentence for a person about a failed call.
  function describe(failure) {
    const what = failure.what || 'the request';
    switch (failure.status) {
      case 0:
        return `Could not reach the collector: ${failure.message}.`;
      case 400:
        return failure.field
          ? `The ${failure.field} filter is not valid: ${failure.message}`
          : `The request was not valid: ${failure.message}`;
      case 401:
        return 'The API key was refused (unknown or revoked). Sign in again.';
      case 403:
        return `Not allowed: ${failure.message}`;
      case 404:
        return `This collector does not offer ${what} yet (the route answered 404).`;
      case 503:
        return `The collector is busy: ${failure.message}. Try again${failure.retryAfter ? ` in ${failure.retryAfter} s` : ''}.`;
      default:
        return `${what} failed (HTTP ${failure.status}): ${failure.message}`;
    }
  }

  // A refused key ends the session wherever it shows up.
  function handleAuth(failure) {
    if (failure instanceof ApiFailure && failure.status === 401) {
      signOut(describe(failure));
      return true;
    }
    return false;
  }

  // ---------- sign-in ----------

  async function signIn(token, fromStorage) {
    const button = $('signin-button');
    button.disabled = true;
    setText($('signin-error'), '');
    state.token = token;
    let who;
    try {
      who = await apiJson('/api/v1/whoami', { what: 'key information (GET /api/v1/whoami)' });
    } catch (failure) {
      state.token = null;
      sessionStorage.removeItem(KEY_STORAGE);
      button.disabled = false;
      showView('signin');
      const message = failure.status === 401
        ? (fromStorage ? 'Your saved key is no longer accepted. Sign in again.'
          : 'That API key was not accepted: it is unknown or revoked.')
        : describe(failure);
      setText($('signin-error'), message);
      $('api-key').setAttribute('aria-invalid', 'true');
      $('api-key').focus();
      return;
    }
    button.disabled = false;
    $('api-key').value = '';
    $('api-key').removeAttribute('aria-invalid');
    sessionStorage.setItem(KEY_STORAGE, token);
    state.who = who;
    const label = who.name ? `${who.name} (${who.key_id})` : who.key_id;
    setText($('session-who'), `${label} · ${who.role} · ${who.org_id}`);
    show($('session'), true);
    if (!READ_ROLES.includes(who.role)) {
      setText($('denied-message'),
        `The audit log is available to ORG_ADMIN and ORG_OWNER keys only. This key (${label}) ` +
        `has the role ${who.role} in organization ${who.org_id}.`);
      showView('denied');
      $('denied-title').focus();
      return;
    }
    setText($('org-name'), who.org_id);
    showView('log');
    state.applied = filtersFromUrl();
    writeForm(state.applied);
    document.title = `Audit Log · ${who.org_id} · CodeStax`;
    const params = new URLSearchParams(window.location.search);
    const viewId = params.get('view');
    if (viewId) await openView(viewId);
    refresh();
    loadRetention();
    loadViews();
    startStreams();
    if (params.get('entry')) openEntry(params.get('entry'));
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.token = null;
    state.who = null;
    state.seq += 1;
    clearInterval(state.streamTimer);
    state.streamTimer = null;
    show($('streams'), false);
    $('streams-body').replaceChildren();
    $('entries-body').replaceChildren();
    show($('session'), false);
    setText($('session-who'), '');
    showView('signin');
    setText($('signin-error'), message || '');
    $('api-key').focus();
  }

  function showView(name) {
    show($('signin-view'), name === 'signin');
    show($('denied-view'), name === 'denied');
    show($('log-view'), name === 'log');
  }

  // ---------- filters ----------

  function filtersFromUrl() {
    const params = new URLSearchParams(window.location.search);
    const f = emptyFilters();
    f.category = params.getAll('category');
    for (const name of SINGLE_FILTERS) f[name] = params.get(name) || '';
    return f;
  }

  function filterParams(f, without) {
    const params = new URLSearchParams();
    if (without !== 'category') for (const c of f.category) params.append('category', c);
    for (const name of SINGLE_FILTERS) {
      if (name !== without && f[name]) params.append(name, f[name]);
    }
    return params;
  }

  function readForm() {
    const f = emptyFilters();
    f.q = $('f-q').value.trim();
    f.category = Array.from(document.querySelectorAll('#f-category-list input:checked'))
      .map((box) => box.value);
    f.user = $('f-user').value;
    f.action = $('f-action').value;
    f.repository = $('f-repository').value;
    f.outcome = $('f-outcome').value;
    f.since = dateToApi($('f-since').value) || state.relative;
    f.until = dateToApi($('f-until').value);
    return f;
  }

  function writeForm(f) {
    $('f-q').value = f.q;
    state.relative = RELATIVE.test(f.since) ? f.since : '';
    $('f-since').value = state.relative ? '' : apiToDate(f.since);
    $('f-until').value = apiToDate(f.until);
    markPreset(f);
    renderCategoryFacets(f, null);
    renderSelectFacet($('f-user'), 'All users', f.user, null, (v) => v);
    renderSelectFacet($('f-action'), 'All actions', f.action, null, (v) => v);
    renderSelectFacet($('f-repository'), 'All repositories', f.repository, null, (v) => v);
    renderSelectFacet($('f-outcome'), 'Any outcome', f.outcome,
      OUTCOMES.map(([value]) => ({ value, count: null })),
      (v) => (OUTCOMES.find(([o]) => o === v) || [v, v])[1]);
  }

  function sameFilters(a, b) {
    return filterParams(a).toString() === filterParams(b).toString();
  }

  function applyForm() {
    const bad = ['f-since', 'f-until'].find((id) => $(id).value.trim() && dateToApi($(id).value) === null);
    for (const id of ['f-since', 'f-until']) $(id).removeAttribute('aria-invalid');
    if (bad) {
      setText($('f-dates-error'), `"${$(bad).value.trim()}" is not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM (UTC).`);
      $(bad).setAttribute('aria-invalid', 'true');
      return false;
    }
    const f = readForm();
    const [from, to] = [boundMs(f.since, false), boundMs(f.until, true)];
    if (from !== null && to !== null && from >= to) {
      setText($('f-dates-error'), 'The date range is empty: "From" is after "To".');
      $('f-until').setAttribute('aria-invalid', 'true');
      return false;
    }
    setText($('f-dates-error'), '');
    markPreset(f);
    if (sameFilters(f, state.applied)) return true;
    state.applied = f;
    const query = filterParams(f).toString();
    history.replaceState(null, '', `${window.location.pathname}${query ? `?${query}` : ''}`);
    refresh();
    return true;
  }

  // Counts beside each filter. A group's counts leave out its own selection, so the other values
  // of that group still show how many entries choosing them would give.
  async function loadFacets(f, seq) {
    const base = `${orgBase()}/audit-log/facets`;
    const ask = (without) => {
      const params = filterParams(f, without);
      params.set('top', String(FACET_TOP));
      return apiJson(`${base}?${params}`, { what: 'facet counts' });
    };
    const groups = [
      ['category', 'categories', f.category.length > 0],
      ['user', 'users', Boolean(f.user)],
      ['action', 'actions', Boolean(f.action)],
      ['repository', 'repositories', Boolean(f.repository)],
      ['outcome', 'outcomes', Boolean(f.outcome)],
    ];
    const all = ask(null);
    const answers = await Promise.all(groups.map(([param, , active]) => (active ? ask(param) : all)));
    if (seq !== state.seq) return;
    const counts = {};
    groups.forEach(([param, field], i) => { counts[param] = answers[i][field]; });
    renderCategoryFacets(f, counts.category);
    renderSelectFacet($('f-user'), 'All users', f.user, counts.user, (v) => v);
    renderSelectFacet($('f-action'), 'All actions', f.action, counts.action, (v) => v);
    renderSelectFacet($('f-repository'), 'All repositories', f.repository, counts.repository, (v) => v);
    renderChart((await all).histogram, f);
    const outcomes = OUTCOMES.map(([value]) => {
      const found = counts.outcome.find((c) => c.value === value);
      return { value, count: found ? found.count : 0 };
    });
    renderSelectFacet($('f-outcome'), 'Any outcome', f.outcome, outcomes,
      (v) => (OUTCOMES.find(([o]) => o === v) || [v, v])[1]);
  }

  // Updates the action-type checkboxes in place (a click or the focus is never lost to a
  // re-render), adding custom categories the collector reports.
  function renderCategoryFacets(f, counts) {
    const list = $('f-category-list');
    const known = CATEGORIES.map(([value, label]) => ({ value, label }));
    for (const c of counts || []) {
      if (!known.some((k) => k.value === c.value)) known.push({ value: c.value, label: c.value });
    }
    for (const value of f.category) {
      if (!known.some((k) => k.value === value)) known.push({ value, label: value });
    }
    const existing = new Map(Array.from(list.children).map((li) => [li.dataset.value, li]));
    for (const { value, label } of known) {
      let item = existing.get(value);
      if (!item) {
        const id = `f-category-${value}`;
        item = el('li', { class: 'facet', 'data-value': value },
          el('input', { type: 'checkbox', id, name: 'category', value }),
          // The count is part of the label, so a screen reader says "Scans, 30 entries".
          el('label', { for: id },
            el('span', { class: 'facet-label', text: label }),
            el('span', { class: 'facet-count', 'data-category': value }),
            el('span', { class: 'visually-hidden facet-unit' })));
        list.append(item);
      }
      const box = item.querySelector('input');
      box.checked = f.category.includes(value);
      const found = counts && counts.find((c) => c.value === value);
      const count = counts ? (found ? found.count : 0) : null;
      if (count !== null) {
        item.querySelector('.facet-count').textContent = count.toLocaleString('en-US');
        item.querySelector('.facet-unit').textContent = count === 1 ? ', 1 entry' : `, ${count} entries`;
        item.classList.toggle('zero', count === 0 && !box.checked);
      }
    }
  }

  function renderSelectFacet(select, allLabel, selected, counts, label) {
    if (!counts && select.options.length > 1) {
      // Keep the old list until the counts come; only make sure the choice is in it.
      if (selected && !Array.from(select.options).some((o) => o.value === selected)) {
        select.append(el('option', { value: selected, text: label(selected) }));
      }
      select.value = selected || '';
      return;
    }
    const values = (counts || []).slice();
    if (selected && !values.some((c) => c.value === selected)) values.push({ value: selected, count: null });
    const wanted = [['', allLabel]].concat(values.map(({ value, count }) => [value,
      count === null || count === undefined
        ? label(value) : `${label(value)} (${count.toLocaleString('en-US')})`]));
    const current = Array.from(select.options).map((o) => [o.value, o.text]);
    if (JSON.stringify(current) !== JSON.stringify(wanted)) {
      select.replaceChildren(...wanted.map(([value, text]) => el('option', { value, text })));
    }
    select.value = selected || '';
  }

  // ---------- dates and presets ----------

  // The date inputs take `YYYY-MM-DD` or `YYYY-MM-DD HH:MM` (UTC), whatever the browser's
  // locale: '' when empty, null when not a date, else the API's form.
  function dateToApi(text) {
    const t = String(text || '').trim();
    if (!t) return '';
    const m = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d))?$/.exec(t);
    if (!m) return null;
    const [y, mo, d, h, mi] = [m[1], m[2], m[3], m[4] || '00', m[5] || '00'].map(Number);
    const ms = Date.UTC(y, mo - 1, d, h, mi);
    const back = new Date(ms);
    if (back.getUTCDate() !== d || back.getUTCMonth() !== mo - 1 || h > 23 || mi > 59) return null;
    return m[4] ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:00Z` : `${m[1]}-${m[2]}-${m[3]}`;
  }

  function apiToDate(value) {
    if (!value || RELATIVE.test(value)) return '';
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)/.exec(value);
    return m ? `${m[1]} ${m[2]}` : value;
  }

  // A bound as milliseconds: a date's `until` is the start of the next day (both days included).
  function boundMs(value, isUntil) {
    if (!value) return null;
    const rel = RELATIVE.exec(value);
    if (rel) return Date.now() - Number(rel[1]) * UNIT_MS[rel[2]];
    if (/^\d{4}-\d\d-\d\d$/.test(value)) return Date.parse(`${value}T00:00:00Z`) + (isUntil ? DAY_MS : 0);
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : ms;
  }

  function markPreset(f) {
    const current = f.until ? null : (RELATIVE.test(f.since) ? f.since : (f.since ? null : ''));
    for (const b of document.querySelectorAll('#f-presets .preset')) {
      b.setAttribute('aria-pressed', String(b.dataset.since === current));
    }
  }

  function choosePreset(since) {
    state.relative = since;
    $('f-since').value = '';
    $('f-until').value = '';
    applyForm();
  }

  // ---------- activity chart ----------

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function isoDay(ms) {
    return new Date(ms).toISOString().slice(0, 10);
  }

  function isoTime(ms) {
    return `${new Date(ms).toISOString().slice(0, 19)}Z`;
  }

  // Bars over the whole selected range (empty buckets included), one per hour or day as the
  // facets API chose; dragging across bars (or clicking one) sets the date range.
  function renderChart(histogram, f) {
    const plot = $('activity-plot');
    const width = histogram && histogram.interval === 'hour' ? HOUR_MS : DAY_MS;
    const counts = new Map();
    for (const b of (histogram && histogram.buckets) || []) counts.set(Date.parse(b.start), b.count);
    const starts = Array.from(counts.keys());
    let from = boundMs(f.since, false);
    let to = boundMs(f.until, true);
    if (from === null) from = starts.length ? Math.min(...starts) : Date.now() - 30 * DAY_MS;
    if (to === null) to = Math.max(Date.now(), starts.length ? Math.max(...starts) + width : 0);
    from = Math.floor(from / width) * width;
    const n = Math.max(1, Math.min(2000, Math.ceil((to - from) / width)));
    const buckets = [];
    for (let i = 0; i < n; i += 1) {
      const start = from + i * width;
      buckets.push({ start, count: counts.get(start) || 0 });
    }
    const max = Math.max(1, ...buckets.map((b) => b.count));
    const total = buckets.reduce((a, b) => a + b.count, 0);
    const label = (ms) => (width === DAY_MS ? isoDay(ms) : `${isoDay(ms)} ${new Date(ms).toISOString().slice(11, 16)}`);
    const chart = svg('svg', {
      id: 'activity-chart', viewBox: `0 0 ${n} 100`, preserveAspectRatio: 'none', role: 'img',
      tabindex: 0, 'aria-describedby': 'activity-hint',
      'aria-label': `${total} entries from ${label(from)} to ${label(from + n * width)} UTC, per ${width === DAY_MS ? 'day' : 'hour'}`,
      'data-interval': width === DAY_MS ? 'day' : 'hour',
    });
    buckets.forEach((b, i) => {
      const h = b.count ? Math.max(2, (b.count / max) * 96) : 0;
      const bar = svg('rect', {
        class: 'bar', x: i + 0.1, y: 100 - h, width: 0.8, height: h,
        'data-start': new Date(b.start).toISOString(), 'data-count': b.count,
      });
      bar.append(svg('title'));
      bar.firstChild.textContent = `${label(b.start)} UTC: ${plural(b.count, 'entry', 'entries')}`;
      chart.append(bar);
    });
    const brush = svg('rect', { class: 'brush', x: 0, y: 0, width: 0, height: 100 });
    chart.append(brush);
    const at = (event) => {
      const box = chart.getBoundingClientRect();
      return Math.max(0, Math.min(n - 1, Math.floor(((event.clientX - box.left) / box.width) * n)));
    };
    let anchor = null;
    const span = (a, b) => [Math.min(a, b), Math.max(a, b)];
    chart.addEventListener('pointerdown', (event) => {
      anchor = at(event);
      if (chart.setPointerCapture && event.pointerId !== undefined) {
        try { chart.setPointerCapture(event.pointerId); } catch (_) { /* synthetic events */ }
      }
      brush.setAttribute('x', anchor);
      brush.setAttribute('width', 1);
      event.preventDefault();
    });
    chart.addEventListener('pointermove', (event) => {
      if (anchor === null) return;
      const [a, b] = span(anchor, at(event));
      brush.setAttribute('x', a);
      brush.setAttribute('width', b - a + 1);
    });
    chart.addEventListener('pointerup', (event) => {
      if (anchor === null) return;
      const [a, b] = span(anchor, at(event));
      anchor = null;
      applyBars(a, b);
    });
    // The keyboard's range: arrows move it, Shift+arrows widen it, Enter applies, Escape clears.
    let keys = null;
    const selection = $('activity-selection');
    const mark = () => {
      brush.setAttribute('x', keys ? keys[0] : 0);
      brush.setAttribute('width', keys ? keys[1] - keys[0] + 1 : 0);
      setText(selection, keys
        ? `Selected ${label(buckets[keys[0]].start)} to ${label(buckets[keys[1]].start)}: ${plural(
          buckets.slice(keys[0], keys[1] + 1).reduce((a, x) => a + x.count, 0), 'entry', 'entries')}. Enter applies.`
        : '');
    };
    chart.addEventListener('keydown', (event) => {
      const last = n - 1;
      const [a, b] = keys || [last, last];
      let next = null;
      if (event.key === 'ArrowLeft') next = event.shiftKey ? [Math.max(0, a - 1), b] : [Math.max(0, a - 1), Math.max(0, a - 1) + (b - a)];
      else if (event.key === 'ArrowRight') next = event.shiftKey ? [a, Math.min(last, b + 1)] : [Math.min(last, b + 1) - (b - a), Math.min(last, b + 1)];
      else if (event.key === 'Home') next = [0, b - a];
      else if (event.key === 'End') next = [last - (b - a), last];
      else if (event.key === 'Escape') { keys = null; mark(); event.preventDefault(); return; }
      else if (event.key === 'Enter' && keys) { event.preventDefault(); applyBars(keys[0], keys[1]); return; }
      if (!next) return;
      event.preventDefault();
      keys = keys ? next : [a, b];
      mark();
    });
    function applyBars(a, b) {
      const start = buckets[a].start;
      const end = buckets[b].start + width;
      state.relative = '';
      if (width === DAY_MS) {
        $('f-since').value = isoDay(start);
        $('f-until').value = isoDay(end - DAY_MS);
      } else {
        $('f-since').value = apiToDate(isoTime(start));
        $('f-until').value = apiToDate(isoTime(end));
      }
      setText(selection, '');
      applyForm();
      const again = $('activity-chart');
      if (again) again.focus();
    }
    const hadFocus = document.activeElement && document.activeElement.id === 'activity-chart';
    plot.replaceChildren(chart, el('div', { class: 'activity-axis' },
      el('span', { text: label(from) }), el('span', { text: label(from + n * width) })));
    if (hadFocus) chart.focus();
    setText($('activity-range'), `${plural(total, 'entry', 'entries')}, per ${width === DAY_MS ? 'day' : 'hour'}`);
  }

  // ---------- click to filter ----------

  // Adds a `field:value` term to the search text unless it is there already.
  function withTerm(q, field, value) {
    const clean = String(value).replace(/"/g, '');
    const term = /\s/.test(clean) ? `${field}:"${clean}"` : `${field}:${clean}`;
    return q.split(/\s+/).includes(term) || q.includes(term) ? q : `${q} ${term}`.trim();
  }

  function filterBy(field, value) {
    const f = Object.assign(readForm(), {});
    if (field === 'target' || field === 'ip') f.q = withTerm(f.q, field, value);
    else f[field] = value;
    writeForm(f);
    applyForm();
  }

  function filterButton(field, value, text, extraClass) {
    const button = el('button', {
      type: 'button', class: `cell-filter${extraClass ? ` ${extraClass}` : ''}`,
      title: `Show only entries with this ${field}`, 'data-filter': field,
    });
    if (text instanceof Node) button.append(text); else button.textContent = text;
    button.addEventListener('click', () => filterBy(field, value));
    return button;
  }

  // ---------- one entry by link ----------

  function entryLink(id) {
    return `${window.location.origin}${window.location.pathname}?entry=${encodeURIComponent(id)}`;
  }

  async function copyLink(link, status) {
    try {
      await navigator.clipboard.writeText(link);
      setText(status, 'Link copied.');
    } catch (_) {
      setText(status, `Copy this link: ${link}`);
    }
  }

  async function openEntry(id) {
    const body = $('entry-body');
    show($('entry-view'), true);
    body.replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
    try {
      const record = await apiJson(`${orgBase()}/audit-log/${encodeURIComponent(id)}`, { what: 'the linked entry' });
      body.replaceChildren(detailsPanel(record));
      $('entry-view').scrollIntoView({ block: 'nearest' });
    } catch (failure) {
      if (handleAuth(failure)) return;
      body.replaceChildren(el('p', { class: 'error', text: failure.status === 404
        ? `No entry ${id} in this organization's log (or it is past retention).` : describe(failure) }));
    }
  }

  // ---------- saved views ----------

  function viewFilters(f) {
    const out = {};
    if (f.category.length) out.category = f.category.slice();
    for (const name of SINGLE_FILTERS) if (f[name]) out[name] = f[name];
    return out;
  }

  function filtersOfView(view) {
    const f = emptyFilters();
    for (const [name, values] of Object.entries(view.filters || {})) {
      if (name === 'category') f.category = values.slice();
      else if (name in f) f[name] = values[0] || '';
    }
    return f;
  }

  async function loadViews() {
    try {
      const answer = await apiJson(`${orgBase()}/saved-views`, { what: 'saved views' });
      state.views = answer.views || [];
      renderViews();
    } catch (failure) {
      if (handleAuth(failure)) return;
      setText($('views-status'), `Saved views unavailable. ${describe(failure)}`);
    }
  }

  function renderViews() {
    const list = $('views-list');
    list.replaceChildren(...state.views.map((view) => {
      const link = el('a', { href: `?view=${encodeURIComponent(view.id)}`, class: 'view-link', 'data-id': view.id, text: view.name });
      link.addEventListener('click', (event) => {
        event.preventDefault();
        writeForm(filtersOfView(view));
        applyForm();
        history.replaceState(null, '', `${window.location.pathname}?view=${encodeURIComponent(view.id)}`);
        setText($('views-status'), `Showing the view “${view.name}”.`);
      });
      const rename = el('button', { type: 'button', class: 'link-button view-rename', 'aria-label': `Rename the view ${view.name}`, text: 'Rename' });
      const remove = el('button', { type: 'button', class: 'link-button view-delete', 'aria-label': `Delete the view ${view.name}`, text: 'Delete' });
      const item = el('li', { class: 'view', 'data-id': view.id }, link, el('span', { class: 'view-actions' }, rename, remove));
      rename.addEventListener('click', () => renameForm(item, view));
      remove.addEventListener('click', () => confirmDelete(item, view));
      return item;
    }));
    show($('views-empty'), state.views.length === 0);
  }

  // Rename in place: the item becomes a small form (Enter saves, Escape cancels).
  function renameForm(item, view) {
    const input = el('input', { type: 'text', class: 'view-new-name', maxlength: '100', 'aria-label': `New name of the view ${view.name}`, autocomplete: 'off' });
    input.value = view.name;
    const save = el('button', { type: 'submit', class: 'button small', text: 'Save' });
    const cancel = el('button', { type: 'button', class: 'link-button', text: 'Cancel' });
    const form = el('form', { class: 'view-edit', novalidate: true }, input, save, cancel);
    cancel.addEventListener('click', renderViews);
    input.addEventListener('keydown', (event) => { if (event.key === 'Escape') renderViews(); });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) {
        input.setAttribute('aria-invalid', 'true');
        setText($('views-status'), 'A view needs a name.');
        return;
      }
      try {
        const renamed = await apiJson(`${orgBase()}/saved-views/${encodeURIComponent(view.id)}`, {
          method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }), what: 'renaming the view',
        });
        setText($('views-status'), `Renamed “${view.name}” to “${renamed.name}”.`);
        await loadViews();
      } catch (failure) {
        if (handleAuth(failure)) return;
        input.setAttribute('aria-invalid', 'true');
        setText($('views-status'), `Not renamed. ${failure.status === 400 || failure.status === 409 ? failure.message : describe(failure)}`);
      }
    });
    item.replaceChildren(form);
    input.focus();
    input.select();
  }

  // Delete asks first, in place (no browser dialog).
  function confirmDelete(item, view) {
    const yes = el('button', { type: 'button', class: 'button small danger view-delete-confirm', text: 'Delete' });
    const no = el('button', { type: 'button', class: 'link-button', text: 'Keep' });
    yes.addEventListener('click', () => deleteView(view));
    no.addEventListener('click', renderViews);
    item.replaceChildren(el('span', { class: 'view-question', text: `Delete “${view.name}”?` }), el('span', { class: 'view-actions' }, yes, no));
    no.focus();
  }

  async function openView(id) {
    try {
      const view = await apiJson(`${orgBase()}/saved-views/${encodeURIComponent(id)}`, { what: 'the saved view' });
      state.applied = filtersOfView(view);
      writeForm(state.applied);
      setText($('views-status'), `Showing the view “${view.name}”.`);
    } catch (failure) {
      if (handleAuth(failure)) return;
      setText($('views-status'), failure.status === 404 ? `No saved view ${id} in this organization.` : describe(failure));
    }
  }

  // Saving under the name of an existing view updates that view.
  async function saveView(event) {
    event.preventDefault();
    const name = $('view-name').value.trim();
    const status = $('views-status');
    if (!name) {
      $('view-name').setAttribute('aria-invalid', 'true');
      setText(status, 'Name the view first.');
      return;
    }
    if (!applyForm()) return;
    $('view-name').removeAttribute('aria-invalid');
    const existing = state.views.find((v) => v.name.toLowerCase() === name.toLowerCase());
    const body = JSON.stringify(existing ? { filters: viewFilters(state.applied) } : { name, filters: viewFilters(state.applied) });
    try {
      const view = await apiJson(existing ? `${orgBase()}/saved-views/${encodeURIComponent(existing.id)}` : `${orgBase()}/saved-views`, {
        method: existing ? 'PATCH' : 'POST', headers: { 'Content-Type': 'application/json' }, body, what: 'saving the view',
      });
      $('view-name').value = '';
      setText(status, `${existing ? 'Updated' : 'Saved'} the view “${view.name}”.`);
      await loadViews();
    } catch (failure) {
      if (handleAuth(failure)) return;
      setText(status, `Not saved. ${failure.status === 400 || failure.status === 409 ? failure.message : describe(failure)}`);
    }
  }

  async function deleteView(view) {
    try {
      const response = await api(`${orgBase()}/saved-views/${encodeURIComponent(view.id)}`, { method: 'DELETE' });
      if (!response.ok) throw await errorOf(response, 'deleting the view');
      setText($('views-status'), `Deleted the view “${view.name}”.`);
      await loadViews();
    } catch (failure) {
      if (!handleAuth(failure)) setText($('views-status'), describe(failure));
    }
  }

  // ---------- streams (ORG_OWNER) ----------

  const STREAM_KINDS = { https: 'HTTPS', splunk_hec: 'Splunk HEC', s3: 'S3', syslog: 'Syslog' };
  // Search filters a stream can apply (q and dates are a view's, not a stream's).
  const STREAM_FILTERS = [['category', 'category'], ['action', 'action'], ['user', 'actor'],
    ['repository', 'repository'], ['outcome', 'outcome']];
  const STREAM_POLL_MS = 3000;

  function streamsBase() {
    return `${orgBase()}/streams`;
  }

  // Where it goes, without secrets (the API never returns them).
  function destinationText(d) {
    switch (d.kind) {
      case 'https': case 'splunk_hec': return d.url;
      case 's3': return `s3://${d.bucket}${d.prefix ? `/${d.prefix}` : ''}${d.endpoint ? ` at ${d.endpoint}` : ''}`;
      case 'syslog': return `${d.address}${d.tls ? ' (TLS)' : ''}`;
      default: return '';
    }
  }

  function lagText(st) {
    const secs = Number(st.lag_seconds || 0);
    return `${plural(Number(st.lag_records || 0), 'record', 'records')}, ${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s`;
  }

  async function loadStreams() {
    if (!state.who || state.who.role !== 'ORG_OWNER') return;
    const seq = state.seq;
    try {
      const answer = await apiJson(streamsBase(), { what: 'streams' });
      if (!state.who) return;
      setText($('streams-error'), '');
      renderStreams(answer.streams || []);
    } catch (failure) {
      if (handleAuth(failure) || seq !== state.seq) return;
      setText($('streams-error'), failure.status === 503 ? `Streams are not running on this collector: ${failure.message}` : describe(failure));
    }
  }

  function renderStreams(streams) {
    const body = $('streams-body');
    // Rows update in place so a focused button keeps its focus across polls.
    const existing = new Map(Array.from(body.children).map((tr) => [tr.dataset.id, tr]));
    const keep = new Set();
    for (const stream of streams) {
      keep.add(stream.id);
      const tr = existing.get(stream.id) || streamRow(stream);
      if (!tr.parentNode) body.append(tr);
      tr.update(stream);
    }
    for (const [id, tr] of existing) if (!keep.has(id)) tr.remove();
    show($('streams-empty'), streams.length === 0);
  }

  function streamRow(stream) {
    const cells = {};
    for (const name of ['name', 'destination', 'format', 'state', 'lag', 'success', 'error', 'actions']) {
      cells[name] = el('td', { class: `stream-${name}` });
    }
    const tr = el('tr', { class: 'stream', 'data-id': stream.id }, ...Object.values(cells));
    const actions = el('div', { class: 'stream-buttons' });
    cells.actions.append(actions);
    const test = el('button', { type: 'button', class: 'button small secondary stream-test', text: 'Test' });
    const pause = el('button', { type: 'button', class: 'button small secondary stream-pause' });
    const remove = el('button', { type: 'button', class: 'button small secondary stream-delete', text: 'Delete' });
    const result = el('span', { class: 'stream-result status', role: 'status' });
    let current = stream;
    test.addEventListener('click', () => testStream(current, test, result));
    pause.addEventListener('click', () => pauseStream(current, pause));
    remove.addEventListener('click', () => confirmStreamDelete(current, actions, tr));
    tr.update = (s) => {
      current = s;
      const st = s.status || {};
      tr.dataset.state = st.state || '';
      const filters = Object.keys(s.filters || {}).length ? filtersText(s.filters) : '';
      fill(cells.name, clipped(s.name, 'user-name'),
        filters ? el('span', { class: 'muted small-text block wrap-anywhere stream-filters', text: filters }) : null,
        s.declared ? el('span', { class: 'badge', title: 'Declared in the collector’s configuration: read-only here', text: 'config' }) : null);
      const secretBits = [s.has_secret ? 'secret set' : null,
        (s.header_names || []).length ? `headers: ${s.header_names.join(', ')}` : null].filter(Boolean).join(' · ');
      fill(cells.destination, el('span', { class: 'badge kind', text: STREAM_KINDS[s.destination.kind] || s.destination.kind }),
        clipped(destinationText(s.destination), 'mono'), secretBits ? clipped(secretBits, 'muted') : null);
      setText(cells.format, s.format);
      cells.state.replaceChildren(el('span', { class: `state state-${st.state}`, text: st.state || '?' }));
      setText(cells.lag, lagText(st));
      setText(cells.success, st.last_success_at ? formatTime(st.last_success_at) : 'never');
      cells.error.replaceChildren(st.last_error
        ? el('span', { class: 'error-text small-text wrap-anywhere', text: st.last_error }) : el('span', { class: 'muted', text: '—' }));
      if (!actions.querySelector('.stream-confirm')) {
        if (s.declared) {
          actions.replaceChildren(test, el('span', { class: 'muted small-text', text: 'read-only (configuration)' }), result);
        } else {
          pause.textContent = s.paused ? 'Resume' : 'Pause';
          pause.setAttribute('aria-label', `${s.paused ? 'Resume' : 'Pause'} the stream ${s.name}`);
          actions.replaceChildren(test, pause, remove, result);
        }
      }
      test.setAttribute('aria-label', `Send a test event to the stream ${s.name}`);
      remove.setAttribute('aria-label', `Delete the stream ${s.name}`);
    };
    return tr;
  }

  // `/test` answers status and timing only, never the destination's body.
  async function testStream(stream, button, result) {
    button.disabled = true;
    setText(result, 'Testing…');
    try {
      const r = await apiJson(`${streamsBase()}/${encodeURIComponent(stream.id)}/test`, { method: 'POST', what: 'the stream test' });
      const code = r.status ? `HTTP ${r.status}` : 'connected';
      setText(result, `${r.accepted ? 'Accepted' : 'Refused'}: ${code} in ${r.duration_ms} ms${r.error ? ` (${r.error})` : ''}`);
      result.className = `stream-result status ${r.accepted ? 'ok-text' : 'error-text'}`;
    } catch (failure) {
      if (handleAuth(failure)) return;
      result.className = 'stream-result status error-text';
      setText(result, describe(failure));
    } finally {
      button.disabled = false;
    }
  }

  async function pauseStream(stream, button) {
    const verb = stream.paused ? 'resume' : 'pause';
    button.disabled = true;
    try {
      await apiJson(`${streamsBase()}/${encodeURIComponent(stream.id)}/${verb}`, { method: 'POST', what: `${verb} the stream` });
      setText($('streams-status'), `${stream.paused ? 'Resumed' : 'Paused'} the stream “${stream.name}”.`);
      await loadStreams();
    } catch (failure) {
      if (!handleAuth(failure)) setText($('streams-status'), describe(failure));
    } finally {
      button.disabled = false;
    }
  }

  function confirmStreamDelete(stream, cell, tr) {
    const yes = el('button', { type: 'button', class: 'button small danger stream-delete-confirm', text: 'Delete' });
    const no = el('button', { type: 'button', class: 'link-button', text: 'Keep' });
    const question = el('span', { class: 'stream-confirm', text: `Delete “${stream.name}”? Records not yet delivered will not be.` });
    no.addEventListener('click', () => { cell.replaceChildren(); tr.update(stream); });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        const response = await api(`${streamsBase()}/${encodeURIComponent(stream.id)}`, { method: 'DELETE' });
        if (!response.ok) throw await errorOf(response, 'deleting the stream');
        setText($('streams-status'), `Deleted the stream “${stream.name}”.`);
        tr.remove();
        await loadStreams();
      } catch (failure) {
        if (!handleAuth(failure)) setText($('streams-status'), describe(failure));
        yes.disabled = false;
      }
    });
    cell.replaceChildren(question, yes, no);
    no.focus();
  }

  function streamFilters(f) {
    const out = {};
    for (const [from, to] of STREAM_FILTERS) {
      const values = [].concat(f[from] || []).filter(Boolean);
      if (values.length) out[to] = values;
    }
    return out;
  }

  function describeStreamFilters() {
    const filters = streamFilters(state.applied);
    const parts = Object.entries(filters).map(([k, v]) => `${k}=${v.join(',')}`);
    const dropped = ['q', 'since', 'until'].filter((k) => state.applied[k]);
    setText($('s-filters-summary'), `${parts.length ? `Current filters: ${parts.join(' · ')}` : 'The current filters select every entry.'}${
      dropped.length ? ` (${dropped.join(', ')} apply to views only)` : ''}`);
  }

  function showStreamKind() {
    const kind = $('s-kind').value;
    for (const fs of document.querySelectorAll('#stream-form .stream-kind')) show(fs, fs.dataset.kind === kind);
  }

  function parseHeaders(text) {
    const headers = {};
    for (const line of String(text || '').split('\n')) {
      const t = line.trim();
      if (!t) continue;
      const at = t.indexOf(':');
      if (at <= 0) return { error: `“${t.slice(0, 40)}” is not “Name: value”.` };
      headers[t.slice(0, at).trim()] = t.slice(at + 1).trim();
    }
    return { headers };
  }

  function streamDestination(kind) {
    const v = (id) => $(id).value.trim();
    const d = { kind };
    const put = (key, value) => { if (value) d[key] = value; };
    if (kind === 'https') {
      put('url', v('s-https-url'));
      put('secret', $('s-https-secret').value);
      const h = parseHeaders($('s-https-headers').value);
      if (h.error) return { error: h.error, field: 's-https-headers' };
      if (Object.keys(h.headers).length) d.headers = h.headers;
      put('ca_pem', v('s-https-ca'));
    } else if (kind === 'splunk_hec') {
      put('url', v('s-hec-url'));
      put('token', $('s-hec-token').value);
      put('index', v('s-hec-index'));
      put('sourcetype', v('s-hec-sourcetype'));
      put('ca_pem', v('s-hec-ca'));
    } else if (kind === 's3') {
      put('bucket', v('s-s3-bucket'));
      put('prefix', v('s-s3-prefix'));
      put('region', v('s-s3-region'));
      put('endpoint', v('s-s3-endpoint'));
      put('access_key_id', $('s-s3-access-key-id').value);
      put('secret_access_key', $('s-s3-secret-access-key').value);
    } else {
      put('address', v('s-syslog-address'));
      d.tls = $('s-syslog-tls').checked;
      put('ca_pem', v('s-syslog-ca'));
    }
    return { destination: d };
  }

  // The form field an API error names (`destination.url` → the URL box of the chosen kind).
  function streamField(field, kind) {
    const prefix = { https: 's-https', splunk_hec: 's-hec', s3: 's-s3', syslog: 's-syslog' }[kind];
    if (!field) return null;
    if (field === 'name' || field === 'format' || field === 'start') return $(`s-${field}`);
    const m = /^destination\.(\w+)/.exec(field);
    if (!m) return null;
    const names = { url: 'url', secret: 'secret', headers: 'headers', ca_pem: 'ca', token: 'token', index: 'index',
      sourcetype: 'sourcetype', bucket: 'bucket', prefix: 'prefix', region: 'region', endpoint: 'endpoint',
      access_key_id: 'access-key-id', secret_access_key: 'secret-access-key', address: 'address' };
    return names[m[1]] ? $(`${prefix}-${names[m[1]]}`) : null;
  }

  async function createStream(event) {
    event.preventDefault();
    const error = $('stream-form-error');
    for (const node of document.querySelectorAll('#stream-form [aria-invalid]')) node.removeAttribute('aria-invalid');
    setText(error, '');
    const kind = $('s-kind').value;
    const fail = (message, node) => {
      setText(error, message);
      if (node) { node.setAttribute('aria-invalid', 'true'); node.focus(); }
    };
    const name = $('s-name').value.trim();
    if (!name) { fail('Name the stream.', $('s-name')); return; }
    let start = $('s-start').value;
    if (start === 'time') {
      const t = dateToApi($('s-start-time').value);
      if (!t) { fail('Write the start time as YYYY-MM-DD or YYYY-MM-DD HH:MM (UTC).', $('s-start-time')); return; }
      start = /T/.test(t) ? t : `${t}T00:00:00Z`;
    }
    const dest = streamDestination(kind);
    if (dest.error) { fail(dest.error, $(dest.field)); return; }
    const body = { name, format: $('s-format').value, start, destination: dest.destination };
    if ($('s-filters').checked) body.filters = streamFilters(state.applied);
    $('stream-create').disabled = true;
    try {
      const created = await apiJson(streamsBase(), {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), what: 'creating the stream',
      });
      // Secrets leave the page once sent.
      for (const input of document.querySelectorAll('#stream-form input, #stream-form textarea')) {
        if (input.type === 'checkbox') input.checked = false; else input.value = '';
      }
      $('stream-new').open = false;
      setText($('streams-status'), `Created the stream “${created.name}” (${created.id}).`);
      await loadStreams();
    } catch (failure) {
      if (handleAuth(failure)) return;
      const detail = failure.status === 400 || failure.status === 409 ? failure.message : describe(failure);
      fail(`Not created${failure.field ? ` (${failure.field})` : ''}: ${detail}`, streamField(failure.field, kind));
    } finally {
      $('stream-create').disabled = false;
    }
  }

  function startStreams() {
    const owner = state.who && state.who.role === 'ORG_OWNER';
    show($('streams'), Boolean(owner));
    clearInterval(state.streamTimer);
    state.streamTimer = null;
    if (!owner) return;
    describeStreamFilters();
    loadStreams();
    state.streamTimer = setInterval(() => {
      if (!document.hidden) loadStreams();
    }, STREAM_POLL_MS);
  }

  // ---------- entries ----------

  async function refresh() {
    const seq = ++state.seq;
    const f = state.applied;
    if (state.who && state.who.role === 'ORG_OWNER') describeStreamFilters();
    const results = document.querySelector('.results');
    results.setAttribute('aria-busy', 'true');
    setText($('results-error'), '');
    setText($('facets-error'), '');
    setText($('result-count'), 'Loading…');
    const params = filterParams(f);
    params.set('limit', String(PAGE_SIZE));
    params.set('group_views', 'true');
    const page = apiJson(`${orgBase()}/audit-log?${params}`, { what: 'the audit log' });
    const facets = loadFacets(f, seq).catch((failure) => {
      if (seq !== state.seq || handleAuth(failure)) return;
      setText($('facets-error'), `Counts unavailable. ${describe(failure)}`);
    });
    try {
      const answer = await page;
      if (seq !== state.seq) return;
      state.total = answer.total;
      state.cursor = answer.next_cursor || null;
      state.shown = 0;
      state.lastGroup = null;
      $('entries-body').replaceChildren();
      appendPage(answer);
    } catch (failure) {
      if (seq !== state.seq || handleAuth(failure)) return;
      $('entries-body').replaceChildren();
      state.total = 0;
      state.shown = 0;
      state.cursor = null;
      setText($('results-error'), describe(failure));
      setText($('result-count'), '');
      show($('empty'), false);
      show($('load-more'), false);
    } finally {
      await facets;
      if (seq === state.seq) results.removeAttribute('aria-busy');
    }
  }

  async function loadMore() {
    if (!state.cursor) return;
    const seq = state.seq;
    const button = $('load-more');
    button.disabled = true;
    const params = filterParams(state.applied);
    params.set('limit', String(PAGE_SIZE));
    params.set('group_views', 'true');
    params.set('cursor', state.cursor);
    try {
      const answer = await apiJson(`${orgBase()}/audit-log?${params}`, { what: 'the next page' });
      if (seq !== state.seq) return;
      state.cursor = answer.next_cursor || null;
      const first = appendPage(answer);
      if (first) first.focus();
    } catch (failure) {
      if (!handleAuth(failure)) setText($('results-error'), describe(failure));
    } finally {
      button.disabled = false;
    }
  }

  // Appends a page's rows, each run of one viewer's consecutive `audit_log.viewed` entries of one
  // writer as one line that opens up (the search's `group_views` rows); returns the first new
  // line's button (to move focus to). A run the page's end cut goes on in the next page's first
  // line if that is of the same viewer and writer (an imported view never joins a real reader's).
  function appendPage(answer) {
    const body = $('entries-body');
    const entries = answer.entries || [];
    const rows = answer.rows || entries.map((_, i) => ({ entry: i }));
    let first = null;
    for (const row of rows) {
      const members = row.views ? row.views.members.map((i) => entries[i]) : [entries[row.entry]];
      const actorId = (members[0].actor || {}).id;
      const last = state.lastGroup;
      const viewed = row.views || members[0].action === VIEWED;
      if (viewed && last && last.actorId === actorId && last.writer === writerKey(members[0])
        && body.lastElementChild === last.end()) {
        last.add(members);
        continue;
      }
      if (row.views) {
        const group = viewGroup(actorId, members);
        state.lastGroup = group;
        if (!first) first = group.button;
        continue;
      }
      state.shown += 1;
      const [line, detailsRow, button] = entryRows(members[0], state.shown);
      body.append(line, detailsRow);
      state.lastGroup = null;
      if (!first) first = button;
    }
    const more = Boolean(state.cursor);
    show($('load-more'), more);
    setText($('load-more'), more
      ? `Load more (${Math.min(PAGE_SIZE, state.total - state.shown).toLocaleString('en-US')} of ${(state.total - state.shown).toLocaleString('en-US')} remaining)`
      : 'Load more');
    show($('empty'), state.total === 0);
    setText($('result-count'), state.total === 0 ? 'No entries'
      : `Showing ${state.shown.toLocaleString('en-US')} of ${plural(state.total, 'entry', 'entries')}`);
    return first;
  }

  // A run of views (one viewer, one writer) as one line with a count, marked "system" as its
  // entries are when the collector wrote them; its button shows or hides the views, each with
  // its own filters and details.
  function viewGroup(actorId, first) {
    const body = $('entries-body');
    const line = el('tr', { class: 'view-group', 'data-actor': actorId || '' });
    const members = [];
    const count = el('span', { class: 'badge view-count' });
    const when = el('td', { class: 'col-time' });
    const summary = el('span', { class: 'muted' });
    const button = el('button', { type: 'button', class: 'button small secondary group-toggle', 'aria-expanded': 'false' }, 'Open');
    const actor = first[0].actor || {};
    line.append(when,
      el('td', { class: 'col-user' }, clipped(actor.name || actor.email || actor.id || '—', 'user-name'),
        actor.kind === 'api_key' ? el('span', { class: 'badge', text: 'API key' }) : null,
        writer(first[0]) === 'collector'
          ? el('span', { class: 'badge system', title: 'Written by the audit log itself, not by an app', text: 'system' })
          : null),
      el('td', { class: 'col-action' }, actionCode(VIEWED), count),
      el('td', { class: 'col-target' }, summary),
      el('td', { class: 'col-repo' }, el('span', { class: 'muted', text: '—' })),
      el('td', { class: 'col-ip' }, el('span', { class: 'muted', text: '—' })),
      el('td', { class: 'col-details' }, button));
    body.append(line);
    const open = () => button.getAttribute('aria-expanded') === 'true';
    const group = {
      actorId,
      writer: writerKey(first[0]),
      button,
      end: () => (members.length ? members[members.length - 1][1] : line),
      add(records) {
        for (const record of records) {
          state.shown += 1;
          const [row, detailsRow] = entryRows(record, state.shown, 'view-member');
          row.hidden = !open();
          group.end().after(row, detailsRow);
          members.push([row, detailsRow, record]);
        }
        const n = members.length;
        count.textContent = `${n} views`;
        line.dataset.count = String(n);
        const newest = members[0][2].time;
        const oldest = members[n - 1][2].time;
        const [day, ...clock] = formatTime(newest).split(' ');
        when.replaceChildren(el('time', { datetime: newest },
          el('span', { class: 'nowrap', text: day }), ' ', el('span', { class: 'nowrap', text: clock.join(' ') })));
        setText(summary, `${n} views in a row, since ${formatTime(oldest)}`);
        button.replaceChildren(open() ? 'Close' : 'Open',
          el('span', { class: 'visually-hidden', text: ` ${n} views by ${actor.name || actorId}` }));
      },
    };
    button.addEventListener('click', () => {
      const now = !open();
      button.setAttribute('aria-expanded', String(now));
      button.firstChild.textContent = now ? 'Close' : 'Open';
      line.classList.toggle('open', now);
      for (const [row, detailsRow] of members) {
        row.hidden = !now;
        if (!now && row.classList.contains('open')) row.querySelector('.details-toggle').click();
        if (!now) detailsRow.hidden = true;
      }
    });
    group.add(first);
    return group;
  }

  // `q=triage · category=scan` from a view's recorded filters.
  function filtersText(filters) {
    const parts = Object.entries(filters || {})
      .map(([name, values]) => `${name}=${[].concat(values).join(',')}`);
    return parts.length ? parts.join(' · ') : 'no filters';
  }

  function entryRows(record, n, rowClass) {
    const actor = record.actor || {};
    const target = record.target;
    const meta = record.metadata || {};
    const detailsId = `entry-details-${n}`;

    // The date and the time may sit on two lines when the table is narrow.
    const [day, ...clock] = formatTime(record.time).split(' ');
    const timeCell = el('td', { class: 'col-time' },
      el('time', { datetime: record.time },
        el('span', { class: 'nowrap', text: day }), ' ',
        el('span', { class: 'nowrap', text: clock.join(' ') })));

    const userCell = el('td', { class: 'col-user' });
    const userKey = actor.email || actor.id;
    const userName = actor.name || actor.email || actor.id || '—';
    userCell.append(userKey
      ? filterButton('user', userKey, clipped(userName, 'user-name'))
      : clipped(userName, 'user-name'));
    if (actor.email && actor.name) userCell.append(clipped(actor.email, 'muted'));
    if (actor.kind && actor.kind !== 'user') {
      userCell.append(el('span', { class: 'badge', text: actor.kind === 'api_key' ? 'API key' : actor.kind }));
    }

    // The collector's own entries are marked: no app can write one (docs/security.md).
    if (writer(record) === 'collector') {
      userCell.append(el('span', {
        class: 'badge system',
        title: 'Written by the audit log itself, not by an app',
        text: 'system',
      }));
    }

    const actionCell = el('td', { class: 'col-action' }, filterButton('action', record.action, actionCode(record.action)));
    if (record.outcome === 'failure') actionCell.append(el('span', { class: 'badge failure', text: 'failed' }));

    const targetCell = el('td', { class: 'col-target' });
    if (record.action === VIEWED && meta.filters) {
      targetCell.append(el('span', { class: 'view-filters block wrap-anywhere', text: filtersText(meta.filters) }));
      if (typeof meta.total === 'number') targetCell.append(clipped(plural(meta.total, 'entry', 'entries'), 'muted'));
    } else if (target) {
      const targetName = target.name || target.id;
      targetCell.append(targetName ? filterButton('target', targetName, clipped(targetName)) : el('span', { text: '—' }));
      targetCell.append(clipped(target.kind, 'muted'));
    } else {
      targetCell.append(el('span', { class: 'muted', text: '—' }));
    }

    const repoCell = el('td', { class: 'col-repo' },
      record.repository ? filterButton('repository', record.repository, clipped(record.repository)) : '—');
    const ipCell = el('td', { class: 'col-ip' },
      meta.ip ? filterButton('ip', meta.ip, clipped(meta.ip, null, 'code')) : el('code', { text: '—' }));

    const button = el('button', {
      type: 'button',
      class: 'button small secondary details-toggle',
      'aria-expanded': 'false',
      'aria-controls': detailsId,
    }, 'Details', el('span', { class: 'visually-hidden', text: ` of ${record.action} at ${formatTime(record.time)}` }));
    const row = el('tr', { class: rowClass || 'entry', 'data-id': record.id || '' },
      timeCell, userCell, actionCell, targetCell, repoCell, ipCell, el('td', { class: 'col-details' }, button));

    const detailsRow = el('tr', { class: 'details-row', id: detailsId, hidden: true });
    const cell = el('td', { colspan: '7' });
    detailsRow.append(cell);
    button.addEventListener('click', () => {
      const open = button.getAttribute('aria-expanded') === 'true';
      if (!open && !cell.firstChild) cell.append(detailsPanel(record));
      button.setAttribute('aria-expanded', String(!open));
      button.firstChild.textContent = open ? 'Details' : 'Hide';
      row.classList.toggle('open', !open);
      detailsRow.hidden = open;
    });
    return [row, detailsRow, button];
  }

  // Who wrote the entry into the log: `collector`, `ingest`, or null for entries stored before
  // provenance existed.
  function writer(record) {
    return (record.provenance && record.provenance.writer) || null;
  }

  // Who wrote the entry, whole (writer, key, source): a run of views is of one.
  function writerKey(record) {
    return JSON.stringify(record.provenance || null);
  }

  function writtenBy(record) {
    const p = record.provenance;
    if (!p) return 'writer unknown (stored before provenance was recorded)';
    if (p.writer === 'collector') return 'the audit log itself (system entry)';
    if (p.writer === 'ingest') return `an app, with ingest key ${p.key_id}`;
    return p.writer;
  }

  // `settings.webhook_configured` may break after its dot, never inside a word.
  function actionCode(action) {
    const code = el('code');
    String(action || '').split('.').forEach((part, i, all) => {
      code.append(el('span', { class: 'nowrap', text: i < all.length - 1 ? `${part}.` : part }));
      if (i < all.length - 1) code.append(el('wbr'));
    });
    return code;
  }

  function jsonText(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === 'string') return value;
    return JSON.stringify(value, null, 2);
  }

  function valueNode(value) {
    const text = jsonText(value);
    if (text === null) return el('span', { class: 'muted', text: '(none)' });
    if (typeof value === 'object') return el('pre', { class: 'value', text });
    return el('span', { class: 'value', text });
  }

  function kvList(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [key, value] of pairs) {
      if (value === undefined || value === null || value === '') continue;
      dl.append(el('dt', { text: key }), el('dd', {}, value instanceof Node ? value : valueNode(value)));
    }
    return dl;
  }

  function detailsPanel(record) {
    const actor = record.actor || {};
    const target = record.target;
    const meta = record.metadata || {};
    const panel = el('div', { class: 'details', role: 'region', 'aria-label': `Details of ${record.action}` });

    const actorText = [actor.name, actor.email ? `<${actor.email}>` : null].filter(Boolean).join(' ');
    const targetText = target
      ? [target.kind, target.name, target.id && target.id !== target.name ? `(${target.id})` : null]
        .filter(Boolean).join(' ')
      : null;
    const left = el('section', { class: 'details-col' }, el('h3', { text: 'Entry' }), kvList([
      ['ID', record.id],
      ['Time', el('time', { datetime: record.time, text: record.time })],
      ['Received', record.received_at],
      ['User', actorText || actor.id],
      ['User ID', actor.id],
      ['User kind', actor.kind],
      ['Action', el('code', { text: record.action })],
      ['Category', record.category ? `${categoryLabel(record.category)} (${record.category})` : null],
      ['Outcome', record.outcome],
      ['Target', targetText],
      ['Repository', record.repository],
      ['Message', record.message],
      ['Written by', writtenBy(record)],
    ]));

    const known = ['ip', 'user_agent', 'scan_type', 'changes'];
    const extra = Object.keys(meta).filter((k) => !known.includes(k)).sort()
      .map((k) => [k, meta[k]]);
    const right = el('section', { class: 'details-col' }, el('h3', { text: 'Metadata' }), kvList([
      ['IP address', meta.ip],
      ['User agent', meta.user_agent],
      ['Scan type', meta.scan_type],
      ...extra,
    ]));
    if (!meta.ip && !meta.user_agent && !meta.scan_type && extra.length === 0) {
      right.append(el('p', { class: 'muted', text: 'No other metadata.' }));
    }

    const changes = Array.isArray(meta.changes) ? meta.changes : [];
    const changesSection = el('section', { class: 'details-changes' }, el('h3', { text: 'Changes (old → new)' }));
    if (changes.length) {
      const table = el('table', { class: 'changes' },
        el('caption', { class: 'visually-hidden', text: 'Changed fields with their old and new values' }),
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col', text: 'Field' }),
          el('th', { scope: 'col', text: 'Old value' }),
          el('th', { scope: 'col' }, el('span', { class: 'visually-hidden', text: 'becomes' })),
          el('th', { scope: 'col', text: 'New value' }))));
      const tbody = el('tbody');
      for (const change of changes) {
        tbody.append(el('tr', { class: 'change' },
          el('th', { scope: 'row' }, el('code', { text: change.field })),
          el('td', { class: 'old' }, valueNode(change.old)),
          el('td', { class: 'arrow', 'aria-hidden': 'true', text: '→' }),
          el('td', { class: 'new' }, valueNode(change.new))));
      }
      table.append(tbody);
      changesSection.append(table);
    } else {
      changesSection.append(el('p', { class: 'muted', text: 'No field changes recorded.' }));
    }

    const raw = el('details', { class: 'raw' },
      el('summary', { text: 'Raw record (JSON)' }),
      el('pre', { text: JSON.stringify(record, null, 2) }));

    const linkStatus = el('span', { class: 'status', role: 'status' });
    const copy = el('button', { type: 'button', class: 'button small secondary copy-link', 'data-link': entryLink(record.id || ''), text: 'Copy link to this entry' });
    copy.addEventListener('click', () => copyLink(copy.dataset.link, linkStatus));
    panel.append(el('div', { class: 'details-grid' }, left, right), changesSection, raw,
      el('div', { class: 'details-actions' }, copy, linkStatus));
    return panel;
  }

  // ---------- export ----------

  function filenameFrom(disposition) {
    if (!disposition) return null;
    const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
    let name = null;
    if (star) {
      try { name = decodeURIComponent(star[1].trim()); } catch (_) { name = null; }
    }
    if (!name) {
      const plain = /filename\s*=\s*("([^"]*)"|[^;]+)/i.exec(disposition);
      if (plain) name = (plain[2] !== undefined ? plain[2] : plain[1]).trim();
    }
    if (!name) return null;
    name = name.replace(/[/\\\u0000-\u001f]/g, '_').replace(/^\.+/, '');
    return name || null;
  }

  async function exportLog() {
    if (!applyForm()) return;
    const format = $('export-format').value;
    const button = $('export-button');
    const status = $('export-status');
    const params = new URLSearchParams({ format });
    for (const [k, v] of filterParams(state.applied)) params.append(k, v);
    button.disabled = true;
    status.className = 'status';
    setText(status, `Preparing the ${format.toUpperCase()} export…`);
    try {
      const response = await api(`${orgBase()}/audit-log/export?${params}`, {
        headers: { Accept: EXPORT_TYPES[format] || '*/*' },
      });
      if (!response.ok) throw await errorOf(response, 'export (GET …/audit-log/export)');
      const blob = await response.blob();
      const name = filenameFrom(response.headers.get('Content-Disposition'))
        || `audit-log-${state.who.org_id}.${format}`;
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      setText(status, `Downloaded ${name} (${formatBytes(blob.size)}): every entry the filters select.`);
      status.dataset.filename = name;
    } catch (failure) {
      if (handleAuth(failure)) return;
      status.className = 'status error-text';
      setText(status, `Export failed. ${describe(failure)}`);
    } finally {
      button.disabled = false;
    }
  }

  // ---------- retention ----------

  const SOURCES = {
    default: 'the collector’s default',
    config: 'set in the collector’s configuration',
    api: 'set here by an org owner',
  };

  async function loadRetention() {
    const summary = $('retention-summary');
    setText($('retention-status'), '');
    try {
      const r = await apiJson(`${orgBase()}/settings/retention`, { what: 'retention settings' });
      renderRetention(r);
    } catch (failure) {
      if (handleAuth(failure)) return;
      $('retention-details').replaceChildren();
      show($('retention-form'), false);
      setText(summary, failure.status === 404
        ? 'Retention settings are not available on this collector yet (the retention route answered 404).'
        : describe(failure));
      setText($('retention-note'), 'Audit logs are retained for 90 days on all plans; Enterprise plans can extend it.');
    }
  }

  function renderRetention(r) {
    state.retention = r;
    setText($('retention-summary'), `Entries are kept for ${plural(r.days, 'day', 'days')}.`);
    $('retention-details').replaceChildren(...[
      ['Source', SOURCES[r.source] || r.source],
      ['Plan', r.plan],
      ['Default', plural(r.default_days, 'day', 'days')],
      ['Legal hold', r.legal_hold ? 'On: nothing is deleted while it is set' : 'Off'],
    ].flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    const editable = Boolean(r.editable) && state.who.role === 'ORG_OWNER';
    show($('retention-form'), editable);
    if (editable) $('retention-days').value = String(r.days);
    let note = '';
    if (!editable) {
      if (state.who.role !== 'ORG_OWNER') note = 'Only an ORG_OWNER can change retention.';
      else if (r.plan !== 'enterprise') note = 'Extended retention is available on Enterprise plans.';
      else note = 'Retention cannot be changed here.';
    }
    setText($('retention-note'), note);
  }

  async function saveRetention(event) {
    event.preventDefault();
    const input = $('retention-days');
    const status = $('retention-status');
    const days = Number(input.value);
    if (!Number.isInteger(days) || days < 1 || days > 3650) {
      input.setAttribute('aria-invalid', 'true');
      status.className = 'status error-text';
      setText(status, 'Enter a whole number of days between 1 and 3650.');
      input.focus();
      return;
    }
    const current = state.retention && state.retention.days;
    if (current && days < current && !window.confirm(
      `Shorten retention from ${current} to ${days} days? Entries older than ${days} days will be deleted.`)) {
      return;
    }
    input.removeAttribute('aria-invalid');
    $('retention-save').disabled = true;
    try {
      const r = await apiJson(`${orgBase()}/settings/retention`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ days }),
        what: 'retention settings',
      });
      renderRetention(r);
      status.className = 'status';
      setText(status, `Saved: entries are now kept for ${plural(r.days, 'day', 'days')}.`);
    } catch (failure) {
      if (handleAuth(failure)) return;
      input.setAttribute('aria-invalid', 'true');
      status.className = 'status error-text';
      setText(status, `Not saved. ${failure.status === 400 ? failure.message : describe(failure)}`);
      input.focus();
    } finally {
      $('retention-save').disabled = false;
    }
  }

  // ---------- wiring ----------

  function start() {
    $('signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('api-key').value.trim();
      if (!token) {
        setText($('signin-error'), 'Enter an API key.');
        $('api-key').setAttribute('aria-invalid', 'true');
        $('api-key').focus();
        return;
      }
      signIn(token, false);
    });
    $('sign-out').addEventListener('click', () => signOut(''));
    $('denied-sign-out').addEventListener('click', () => signOut(''));
    $('filters').addEventListener('submit', (event) => {
      event.preventDefault();
      applyForm();
    });
    // Choices apply at once; the search box on Enter, the Search button or leaving it.
    $('filters').addEventListener('change', () => applyForm());
    $('f-q').addEventListener('search', () => applyForm());
    $('clear-filters').addEventListener('click', () => {
      writeForm(emptyFilters());
      applyForm();
      $('f-q').focus();
    });
    $('load-more').addEventListener('click', loadMore);
    for (const b of document.querySelectorAll('#f-presets .preset')) {
      b.addEventListener('click', () => choosePreset(b.dataset.since));
    }
    // Typing a date replaces a preset's relative range.
    for (const id of ['f-since', 'f-until']) $(id).addEventListener('input', () => { state.relative = ''; });
    $('view-form').addEventListener('submit', saveView);
    $('entry-close').addEventListener('click', () => {
      show($('entry-view'), false);
      $('entry-body').replaceChildren();
    });
    $('export-button').addEventListener('click', exportLog);
    $('retention-form').addEventListener('submit', saveRetention);
    $('stream-form').addEventListener('submit', createStream);
    // Example URLs live here: the page itself names no other origin.
    $('s-https-url').placeholder = 'https://siem.example.com/ingest';
    $('s-hec-url').placeholder = 'https://splunk.example.com:8088';
    $('s-s3-endpoint').placeholder = 'https://minio.example.com:9000';
    $('s-kind').addEventListener('change', showStreamKind);
    $('s-start').addEventListener('change', () => show($('s-start-time'), $('s-start').value === 'time'));
    $('streams-refresh').addEventListener('click', loadStreams);
    $('stream-new').addEventListener('toggle', describeStreamFilters);
    $('denied-title').setAttribute('tabindex', '-1');

    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) {
      signIn(saved, true);
    } else {
      showView('signin');
      $('api-key').focus();
    }
  }

  start();
}());
