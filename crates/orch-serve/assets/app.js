// The orch serve page: runs list, run view (DAG, timeline, live log), start, cancel, resume.
// Every text from the server goes into the page through textContent or SVG text nodes,
// never as HTML.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const MAX_LOG_LINES = 20000;
let view = null; // what the current route cleans up

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function notice(text) { document.getElementById('notice').textContent = text || ''; }

function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function badge(status) {
  return el('span', { class: `badge st-${status}`, 'data-status': status }, status);
}

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (opts.json !== undefined) {
    opts.method = opts.method || 'POST';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) throw new Unauthorized();
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function showLogin(main) {
  main.replaceChildren(
    el('h1', {}, 'This server needs a token'),
    el('form', {
      class: 'start', id: 'login-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const token = document.getElementById('token').value;
        try { await api('/api/login', { json: { token } }); route(); }
        catch (e) { notice(e instanceof Unauthorized ? 'wrong token' : e.message); }
      },
    },
    el('label', {}, 'Token', el('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true })),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Sign in'))),
  );
  document.getElementById('token').focus();
}

function handle(main, e) {
  if (e instanceof Unauthorized) showLogin(main);
  else notice(e.message);
}

// ---- runs list ----

function parseList(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

function parseVars(text) {
  const vars = {};
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i <= 0) throw new Error(`var line "${t}" is not KEY=VALUE`);
    vars[t.slice(0, i).trim()] = t.slice(i + 1);
  }
  return vars;
}

async function startRun(body) {
  const r = await api('/api/runs', { json: body });
  location.hash = `#/runs/${encodeURIComponent(r.run_id)}`;
}

function startForm() {
  return el('form', {
    class: 'start', id: 'start-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await startRun({
          vars: parseVars(document.getElementById('start-vars').value),
          only: parseList(document.getElementById('start-only').value),
          skip: parseList(document.getElementById('start-skip').value),
        });
      } catch (e) { handle(document.getElementById('main'), e); }
    },
  },
  el('label', {}, 'Vars (KEY=VALUE, one a line)', el('textarea', { id: 'start-vars', rows: 2 })),
  el('label', {}, 'Only (ID or tag:T)', el('input', { id: 'start-only' })),
  el('label', {}, 'Skip (ID or tag:T)', el('input', { id: 'start-skip' })),
  el('div', { class: 'actions' }, el('button', { type: 'submit', id: 'start' }, 'Start a run')));
}

function runDuration(r) {
  if (r.duration_ms !== null && r.duration_ms !== undefined) return fmtDuration(r.duration_ms);
  if (r.status === 'running' && r.started_at) return fmtDuration(Date.now() - Date.parse(r.started_at));
  return '';
}

async function showList(main) {
  const table = el('tbody', { id: 'runs' });
  main.replaceChildren(
    el('h1', {}, 'Runs'),
    startForm(),
    el('h2', {}, 'History'),
    el('table', {}, el('thead', {}, el('tr', {},
      el('th', {}, 'Run'), el('th', {}, 'Status'), el('th', {}, 'Started'),
      el('th', {}, 'Duration'), el('th', {}, 'Phases'))), table),
  );
  let timer = null;
  const refresh = async () => {
    try {
      const { runs } = await api('/api/runs');
      table.replaceChildren(...runs.map((r) => el('tr', {},
        el('td', {}, el('a', { href: `#/runs/${encodeURIComponent(r.run_id)}`, class: 'mono' }, r.run_id)),
        el('td', {}, badge(r.status)),
        el('td', {}, r.started_at || (r.position ? `queued, #${r.position}` : '')),
        el('td', {}, runDuration(r)),
        el('td', {}, Object.entries(r.counts || {}).map(([k, n]) => `${n} ${k}`).join(', ') || (r.error || '')))));
      if (!runs.length) table.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No runs yet.')));
    } catch (e) { handle(main, e); return; }
    timer = setTimeout(refresh, 2000);
  };
  view = { close: () => clearTimeout(timer) };
  await refresh();
}

// ---- one run ----

function layout(phases) {
  // Column = longest chain of needs before the phase; rows keep declaration order.
  const ids = Object.keys(phases);
  const depth = {};
  const visit = (id, seen) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const needs = (phases[id].needs || []).filter((n) => phases[n]);
    depth[id] = needs.length ? 1 + Math.max(...needs.map((n) => visit(n, seen))) : 0;
    return depth[id];
  };
  ids.forEach((id) => visit(id, new Set()));
  const cols = [];
  for (const id of ids) (cols[depth[id]] = cols[depth[id]] || []).push(id);
  const pos = {};
  cols.forEach((col, c) => col.forEach((id, r) => { pos[id] = { x: 10 + c * 185, y: 10 + r * 42 }; }));
  const width = 10 + cols.length * 185 - 15;
  const height = 10 + Math.max(1, ...cols.map((c) => c.length)) * 42;
  return { pos, width, height };
}

class RunView {
  constructor(main, id) {
    this.main = main;
    this.id = id;
    this.run = null;
    this.logs = {};
    this.selected = null;
    this.nodes = {};
    this.es = null;
    this.ticker = null;
    this.closed = false;
    this.ended = false;
  }

  close() {
    this.closed = true;
    if (this.es) this.es.close();
    clearInterval(this.ticker);
  }

  async load() {
    this.run = await api(`/api/runs/${encodeURIComponent(this.id)}`);
    if (!Object.keys(this.run.phases || {}).length) {
      try {
        const p = await api('/api/pipeline');
        this.run.phases = {};
        for (const ph of p.phases) this.run.phases[ph.id] = { status: 'pending', needs: ph.needs, kind: ph.kind };
      } catch (_) { /* the record alone */ }
    }
    this.render();
    this.follow(0);
    this.ticker = setInterval(() => this.renderHead(), 1000);
  }

  follow(after) {
    if (this.closed) return;
    const url = `/api/runs/${encodeURIComponent(this.id)}/events${after ? `?after=${after}` : ''}`;
    const es = new EventSource(url);
    this.es = es;
    es.onmessage = (m) => { try { this.apply(JSON.parse(m.data)); } catch (e) { notice(e.message); } };
    es.addEventListener('end', () => { es.close(); this.ended = true; notice(''); this.refresh(); });
    es.addEventListener('lagged', async (m) => {
      // This page fell too far behind the run: reload the record and the selected log,
      // then follow from where the run is now.
      es.close();
      const { head } = JSON.parse(m.data);
      notice('the page fell behind the run; reloaded');
      await this.refresh();
      this.logs = {};
      if (this.selected) await this.loadLog(this.selected);
      this.follow(head);
    });
    es.onerror = () => { if (es.readyState !== EventSource.CLOSED) notice('reconnecting…'); };
    es.onopen = () => notice('');
  }

  async refresh() {
    try {
      const r = await api(`/api/runs/${encodeURIComponent(this.id)}`);
      const keep = this.run.phases;
      this.run = r;
      if (!Object.keys(r.phases || {}).length) this.run.phases = keep;
      for (const id of Object.keys(this.run.phases)) this.paint(id);
      this.renderHead();
      this.renderTimeline();
      this.renderPhase();
    } catch (e) { handle(this.main, e); }
  }

  async loadLog(phase) {
    try {
      const r = await fetch(`/api/runs/${encodeURIComponent(this.id)}/logs/${encodeURIComponent(phase)}`, { credentials: 'same-origin' });
      const text = r.ok ? await r.text() : '';
      this.logs[phase] = text ? text.replace(/\n$/, '').split('\n').map((line) => ({ line, stream: 'log' })) : [];
      this.renderPhase();
    } catch (e) { notice(e.message); }
  }

  phase(id) {
    const p = this.run.phases[id];
    if (p) return p;
    this.run.phases[id] = { status: 'pending', needs: [] };
    return this.run.phases[id];
  }

  apply(e) {
    const run = this.run;
    switch (e.type) {
      case 'run_started':
        run.status = 'running';
        run.started_at = e.at;
        break;
      case 'phase_started': {
        const p = this.phase(e.phase);
        p.status = 'running';
        p.attempts = e.attempt;
        if (!p.started_at || e.attempt === 1) p.started_at = e.at;
        delete p.finished_at;
        if (e.attempt === 1) this.logs[e.phase] = [];
        this.paint(e.phase);
        if (!this.selected) this.select(e.phase, false);
        break;
      }
      case 'phase_output': {
        const log = (this.logs[e.phase] = this.logs[e.phase] || []);
        log.push({ line: e.line, stream: e.stream });
        if (log.length > MAX_LOG_LINES) log.splice(0, log.length - MAX_LOG_LINES);
        if (e.phase === this.selected) this.appendLog(e);
        return;
      }
      case 'phase_retrying': {
        const p = this.phase(e.phase);
        p.status = 'retrying';
        p.reason = e.error;
        this.paint(e.phase);
        break;
      }
      case 'phase_finished': {
        const p = this.phase(e.phase);
        Object.assign(p, {
          status: e.status, attempts: e.attempts, duration_ms: e.duration_ms, exit_code: e.exit_code,
          reason: e.reason, outputs: e.outputs, finished_at: e.at,
        });
        this.paint(e.phase);
        break;
      }
      case 'run_finished':
        run.status = e.status;
        run.finished_at = e.at;
        run.duration_ms = e.duration_ms;
        break;
      case 'run_error':
        run.status = e.status;
        run.error = e.message;
        break;
      default:
        return;
    }
    this.renderHead();
    this.renderTimeline();
    if (e.phase === undefined || e.phase === this.selected) this.renderPhase();
  }

  render() {
    const phases = this.run.phases;
    const { pos, width, height } = layout(phases);
    const dag = svg('svg', { class: 'dag', id: 'dag', viewBox: `0 0 ${width} ${height}`, width, height, role: 'group', 'aria-label': 'phases' });
    for (const [id, p] of Object.entries(phases)) {
      for (const n of p.needs || []) {
        if (!pos[n]) continue;
        const a = pos[n];
        const b = pos[id];
        const x1 = a.x + 160;
        const y1 = a.y + 16;
        const x2 = b.x;
        const y2 = b.y + 16;
        dag.append(svg('path', { class: 'edge', d: `M${x1},${y1} C${x1 + 15},${y1} ${x2 - 15},${y2} ${x2},${y2}` }));
      }
    }
    this.nodes = {};
    for (const id of Object.keys(phases)) {
      const g = svg('g', { class: 'node', tabindex: 0, role: 'button', 'data-phase': id, transform: `translate(${pos[id].x},${pos[id].y})` });
      const title = svg('title', {});
      const label = svg('text', { x: 10, y: 21 });
      label.textContent = id.length > 20 ? `${id.slice(0, 19)}…` : id;
      g.append(title, svg('rect', { width: 160, height: 32, rx: 6 }), label);
      g.addEventListener('click', () => this.select(id, true));
      g.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); this.select(id, true); }
      });
      dag.append(g);
      this.nodes[id] = g;
      this.paint(id);
    }
    const head = el('div', { class: 'runhead' },
      el('h1', {}, 'Run ', el('span', { class: 'mono' }, this.id)),
      el('span', { id: 'run-status' }),
      el('span', { id: 'run-duration', class: 'muted' }),
      el('span', { class: 'actions' },
        el('button', { id: 'cancel', type: 'button', onclick: () => this.cancel() }, 'Cancel'),
        el('button', { id: 'resume', type: 'button', class: 'secondary', onclick: () => this.resume() }, 'Resume'),
        el('a', { href: '#/' }, 'All runs')));
    this.main.replaceChildren(
      head,
      el('p', { id: 'run-error', class: 'reason' }),
      el('h2', {}, 'Phases'), el('div', { class: 'panel' }, dag),
      el('div', { class: 'layout' },
        el('section', {},
          el('h2', {}, 'Timeline'), el('div', { class: 'panel timeline', id: 'timeline' })),
        el('section', { id: 'phase-panel', 'aria-live': 'off' })),
    );
    this.renderHead();
    this.renderTimeline();
    this.renderPhase();
  }

  paint(id) {
    const g = this.nodes[id];
    if (!g) return;
    const p = this.run.phases[id];
    g.setAttribute('class', `node st-${p.status}${id === this.selected ? ' selected' : ''}`);
    g.setAttribute('data-status', p.status);
    g.setAttribute('aria-label', `phase ${id}: ${p.status}`);
    g.querySelector('title').textContent = `${id}: ${p.status}${p.reason ? ` (${p.reason})` : ''}`;
  }

  renderHead() {
    const s = document.getElementById('run-status');
    if (!s) return;
    const r = this.run;
    s.replaceChildren(badge(r.status), r.position ? ` #${r.position} in the queue` : '');
    document.getElementById('run-duration').textContent = runDuration(r);
    const live = r.status === 'running' || r.status === 'queued';
    document.getElementById('cancel').disabled = !live;
    document.getElementById('resume').disabled = !['failed', 'cancelled', 'died'].includes(r.status) || !!r.error;
    document.getElementById('run-error').textContent = r.error || r.waiting_for || '';
  }

  renderTimeline() {
    const box = document.getElementById('timeline');
    if (!box) return;
    const phases = Object.entries(this.run.phases).filter(([, p]) => p.started_at);
    const t0 = Date.parse(this.run.started_at) || Math.min(...phases.map(([, p]) => Date.parse(p.started_at)));
    const now = Date.now();
    const end = this.run.finished_at ? Date.parse(this.run.finished_at) : now;
    const ends = phases.map(([, p]) => (p.finished_at ? Date.parse(p.finished_at) : now));
    const total = Math.max(1, end - t0, ...ends.map((x) => x - t0));
    box.replaceChildren(...phases.map(([id, p], i) => {
      const bar = el('div', { class: `tl-bar st-${p.status}`, title: `${id}: ${fmtDuration(ends[i] - Date.parse(p.started_at))}` });
      bar.style.left = `${((Date.parse(p.started_at) - t0) / total) * 100}%`;
      bar.style.width = `${Math.max(0.3, ((ends[i] - Date.parse(p.started_at)) / total) * 100)}%`;
      return el('div', { class: 'tl-row' }, el('span', { class: 'tl-name mono' }, id), el('div', { class: 'tl-track' }, bar));
    }));
    if (!phases.length) box.replaceChildren(el('p', { class: 'muted' }, 'Nothing has started yet.'));
  }

  select(id, focusLog) {
    const prev = this.selected;
    this.selected = id;
    if (prev) this.paint(prev);
    this.paint(id);
    if (!this.logs[id] && this.ended) this.loadLog(id);
    this.renderPhase();
    if (focusLog) document.getElementById('log').focus({ preventScroll: true });
  }

  renderPhase() {
    const panel = document.getElementById('phase-panel');
    if (!panel) return;
    const id = this.selected;
    if (!id) { panel.replaceChildren(el('h2', {}, 'Phase'), el('p', { class: 'muted' }, 'Select a phase (click it, or Tab to it and press Enter).')); return; }
    const p = this.run.phases[id] || {};
    const log = el('pre', { class: 'log', id: 'log', tabindex: 0, 'aria-label': `log of ${id}` });
    for (const l of this.logs[id] || []) log.append(this.logLine(l));
    const rows = [['status', p.status], ['kind', p.kind], ['attempts', p.attempts], ['exit code', p.exit_code],
      ['duration', fmtDuration(p.duration_ms)], ['reason', p.reason]]
      .filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, String(v))));
    const outputs = Object.entries(p.outputs || {});
    const artifacts = p.artifacts || [];
    const follow = el('input', { type: 'checkbox', id: 'follow', checked: true });
    panel.replaceChildren(
      el('h2', {}, 'Phase ', el('span', { class: 'mono' }, id)),
      el('table', { class: 'kv' }, el('tbody', {}, ...rows)),
      el('h2', {}, 'Log'),
      el('div', { class: 'actions' }, el('label', {}, follow, ' follow'),
        el('a', { href: `/api/runs/${encodeURIComponent(this.id)}/logs/${encodeURIComponent(id)}`, target: '_blank', rel: 'noopener' }, 'raw log')),
      log,
      el('h2', {}, 'Outputs'),
      outputs.length
        ? el('table', { class: 'kv', id: 'outputs' }, el('tbody', {}, ...outputs.map(([k, v]) => el('tr', {}, el('td', { class: 'mono' }, k), el('td', { class: 'mono' }, String(v))))))
        : el('p', { class: 'muted' }, 'None.'),
      el('h2', {}, 'Artifacts'),
      artifacts.length
        ? el('ul', { id: 'artifacts' }, ...artifacts.map((a) => el('li', {}, el('span', { class: 'mono' }, a.name || ''), ` (${a.kind || ''})`, a.digest ? el('span', { class: 'mono muted' }, ` ${a.digest}`) : null)))
        : el('p', { class: 'muted' }, 'None.'),
    );
    log.scrollTop = log.scrollHeight;
  }

  logLine(l) {
    return l.stream === 'stderr' ? el('span', { class: 'log-err' }, `${l.line}\n`) : document.createTextNode(`${l.line}\n`);
  }

  appendLog(e) {
    const log = document.getElementById('log');
    if (!log) return;
    log.append(this.logLine(e));
    const follow = document.getElementById('follow');
    if (!follow || follow.checked) log.scrollTop = log.scrollHeight;
  }

  async cancel() {
    try {
      const r = await api(`/api/runs/${encodeURIComponent(this.id)}/cancel`, { method: 'POST' });
      notice(r.status === 'cancelling' ? 'stopping the run (press again to kill its phases now)' : 'removed from the queue');
      if (r.status === 'cancelled') this.refresh();
    } catch (e) { handle(this.main, e); }
  }

  async resume() {
    try { await startRun({ resume: this.id }); } catch (e) { handle(this.main, e); }
  }
}

async function showRun(main, id) {
  const v = new RunView(main, id);
  view = v;
  try { await v.load(); } catch (e) { handle(main, e); }
}

async function route() {
  if (view) view.close();
  view = null;
  notice('');
  const main = document.getElementById('main');
  const m = location.hash.match(/^#\/runs\/([^/]+)$/);
  if (m) await showRun(main, decodeURIComponent(m[1]));
  else await showList(main);
  try {
    const p = await api('/api/pipeline');
    document.getElementById('pipeline-name').textContent = p.name;
    document.title = `orch · ${p.name}`;
  } catch (_) { /* shown by the view */ }
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', route);
