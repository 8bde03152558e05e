// keel's operations dashboard: draws the panels the admin server streams (Server-Sent Events read
// with fetch, so the token travels in the Authorization header, never in a URL). No framework;
// charts by uPlot.
'use strict';
(function () {
  const TOKEN_KEY = 'keel-admin-token';
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== undefined && c !== null) e.append(c);
    return e;
  };

  // ---------- formatting for people ----------
  const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function bytes(n) {
    let i = 0;
    let v = Math.abs(n);
    while (v >= 1024 && i < BYTE_UNITS.length - 1) {
      v /= 1024;
      i++;
    }
    const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
    return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${BYTE_UNITS[i]}`;
  }
  function num(n) {
    if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
    if (Number.isInteger(n)) return n.toLocaleString('en');
    return n.toLocaleString('en', {
      maximumFractionDigits: Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2,
    });
  }
  function duration(ms) {
    const s = Math.abs(ms) / 1000;
    if (s < 1) return `${Math.round(Math.abs(ms))} ms`;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }
  let serverNow = Date.now();
  function ago(t) {
    const d = serverNow - t;
    if (d < 1000) return 'just now';
    return d > 0 ? `${duration(d)} ago` : `in ${duration(-d)}`;
  }
  function fmt(value, unit) {
    if (value === null || value === undefined) return '—';
    if (typeof value === 'string') return value;
    if (!Number.isFinite(value)) return '—';
    switch (unit) {
      case 'bytes':
        return bytes(value);
      case 'bytesPerSecond':
        return `${bytes(value)}/s`;
      case 'perSecond':
        return `${num(value)}/s`;
      case 'ratio':
        return `${(value * 100).toFixed(value >= 0.999 || value === 0 ? 0 : 1)} %`;
      case 'ms':
        return duration(value);
      case 'seconds':
        return duration(value * 1000);
      case 'timestamp':
        return ago(value);
      default:
        return num(value);
    }
  }

  // ---------- the token (this tab only) ----------
  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY),
    set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
    clear: () => sessionStorage.removeItem(TOKEN_KEY),
  };
  const authHeaders = () => {
    const t = token.get();
    return t ? { authorization: `Bearer ${t}` } : {};
  };
  function askToken(reason) {
    $('token-reason').textContent = reason;
    $('token-form').hidden = false;
    $('token-input').focus();
  }
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token.set($('token-input').value.trim());
    $('token-input').value = '';
    $('token-form').hidden = true;
    $('forget-token').hidden = false;
    reconnect(0);
  });
  $('forget-token').addEventListener('click', () => {
    token.clear();
    $('forget-token').hidden = true;
    start();
  });
  // The page knows whether the server wants a token: without one it asks before any request.
  function start() {
    const authMeta = document.querySelector('meta[name="keel-auth"]');
    if (authMeta && authMeta.getAttribute('content') === 'token' && !token.get()) {
      if (controller) controller.abort();
      clearTimeout(retryTimer);
      connection('not connected', 'down');
      askToken('This admin server needs its token to show its figures and run actions.');
    } else reconnect(0);
  }

  function notice(text, kind) {
    const n = $('notice');
    n.textContent = text;
    n.className = kind || '';
    n.hidden = !text;
  }
  function connection(text, state) {
    const c = $('connection');
    c.textContent = text;
    c.className = state || '';
  }

  // ---------- the stream ----------
  let controller;
  let retryTimer;
  function reconnect(delayMs) {
    if (controller) controller.abort();
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delayMs);
  }
  async function connect() {
    controller = new AbortController();
    const signal = controller.signal;
    let res;
    try {
      res = await fetch('/dashboard/events', { headers: authHeaders(), signal, cache: 'no-store' });
    } catch (err) {
      if (signal.aborted) return;
      connection(`admin server unreachable (${err.message}); retrying`, 'down');
      return reconnect(2000);
    }
    if (res.status === 401) {
      const had = token.get();
      connection('not connected: the admin server wants its token', 'down');
      askToken(
        had
          ? 'The admin server refused this token (401). Enter the right one.'
          : 'This admin server needs its token (401).',
      );
      return;
    }
    if (!res.ok) {
      const body = await res.text().catch(() => '');
      connection(`not connected (${res.status}); retrying in 5 s`, 'down');
      notice(`The admin server refused the live stream (${res.status}): ${errorText(body)}`);
      return reconnect(5000);
    }
    notice('');
    connection('live', 'live');
    $('forget-token').hidden = !token.get();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          handleEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      // a broken stream: reconnect below
    }
    if (signal.aborted) return;
    connection('stream ended; reconnecting', 'down');
    reconnect(2000);
  }
  function handleEvent(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length === 0) return;
    const payload = JSON.parse(data.join('\n'));
    if (event === 'history') loadHistory(payload.charts || {});
    else if (event === 'snapshot') render(payload);
  }
  function errorText(body) {
    try {
      const j = JSON.parse(body);
      return j.error || j.detail || j.title || body;
    } catch {
      return body;
    }
  }

  // ---------- charts ----------
  const MAX_POINTS = 300;
  const charts = new Map(); // key -> { plot, names, data, unit, host }
  const pending = new Map(); // key -> [{ t, series }] from the history event
  const PALETTE = {
    HIT: '#2da44e',
    MISS: '#bf8700',
    PARTIAL: '#8250df',
    STALE: '#e16f24',
    BYPASS: '#6e7781',
    PASS: '#0969da',
    ERROR: '#cf222e',
    DENIED: '#a40e26',
  };
  const EXTRA = ['#0969da', '#2da44e', '#cf222e', '#8250df', '#bf8700', '#1b7c83', '#e16f24', '#6e7781'];
  function colour(name, i) {
    return PALETTE[name] || EXTRA[i % EXTRA.length];
  }
  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  function loadHistory(hist) {
    for (const [key, points] of Object.entries(hist)) pending.set(key, points);
  }
  function chartPanel(key, panel, host) {
    const names = Object.keys(panel.series);
    let c = charts.get(key);
    if (c && (c.names.join('\u0000') !== names.join('\u0000') || c.host !== host)) {
      c.plot.destroy();
      charts.delete(key);
      c = undefined;
    }
    if (!c) {
      const data = [[], ...names.map(() => [])];
      for (const p of pending.get(key) || []) push(data, names, p.t, p.series);
      pending.delete(key);
      const text = css('--muted');
      const grid = css('--line');
      const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      const opts = {
        width: Math.max(200, host.clientWidth),
        height: 170,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } },
        series: [
          {},
          ...names.map((n, i) => ({
            label: n,
            stroke: colour(n, i),
            width: 1.5,
            value: (u, v) => fmt(v, panel.unit),
          })),
        ],
        axes: [axis, { ...axis, size: 84, values: (u, vals) => vals.map((v) => fmt(v, panel.unit)) }],
      };
      const plot = new uPlot(opts, data, host);
      c = { plot, names, data, unit: panel.unit, host };
      charts.set(key, c);
    }
    push(c.data, c.names, Date.now(), panel.series);
    c.plot.setData(c.data);
    // The legend shows the latest values unless the pointer is over the chart.
    if (c.plot.cursor.idx === null || c.plot.cursor.idx === undefined)
      c.plot.setLegend({ idx: c.data[0].length - 1 });
    host.setAttribute(
      'aria-label',
      `${panel.title}: ${c.names.map((n) => `${n} ${fmt(panel.series[n], panel.unit)}`).join(', ')}`,
    );
  }
  function push(data, names, t, series) {
    data[0].push(t / 1000);
    names.forEach((n, i) => data[i + 1].push(series[n] ?? null));
    if (data[0].length > MAX_POINTS) for (const arr of data) arr.splice(0, arr.length - MAX_POINTS);
  }
  let resizeTimer;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const c of charts.values())
        c.plot.setSize({ width: Math.max(200, c.host.clientWidth), height: 170 });
    }, 100);
  });

  // ---------- panels ----------
  const sections = new Map(); // view id -> { section, panels: Map<key, state> }
  function render(snap) {
    serverNow = snap.t;
    document.title = `${snap.title} dashboard`;
    $('title').textContent = snap.title;
    const main = $('views');
    const seen = new Set();
    for (const view of snap.views) {
      seen.add(view.id);
      let s = sections.get(view.id);
      if (!s) {
        const section = el('section', {
          class: 'view',
          id: `view-${view.id}`,
          'aria-labelledby': `view-${view.id}-title`,
        });
        section.append(
          el('h2', { id: `view-${view.id}-title`, text: view.title }),
          el('div', { class: 'panels' }),
        );
        main.append(section);
        s = { section, panels: new Map() };
        sections.set(view.id, s);
      }
      renderPanels(view, s);
    }
    for (const [id, s] of sections)
      if (!seen.has(id)) {
        s.section.remove();
        sections.delete(id);
      }
  }
  function renderPanels(view, s) {
    const grid = s.section.querySelector('.panels');
    const seen = new Set();
    let prev = null;
    for (const panel of view.panels) {
      const key = `${view.id}/${panel.kind}/${panel.id || panel.title}`;
      seen.add(key);
      let p = s.panels.get(key);
      if (!p) {
        const box = el('div', {
          class: `panel panel-${panel.kind}${panel.kind === 'table' || panel.kind === 'log' ? ' wide' : ''}`,
          'data-panel': key,
        });
        box.append(
          el('h3', { text: panel.title }),
          el('div', { class: 'body' }),
          el('div', { class: 'panel-actions' }),
        );
        p = { box, actionsSig: '', rowsSig: '' };
        s.panels.set(key, p);
      }
      // Keep the order the view gives.
      if (prev ? prev.nextSibling !== p.box : grid.firstChild !== p.box)
        grid.insertBefore(p.box, prev ? prev.nextSibling : grid.firstChild);
      prev = p.box;
      p.box.querySelector('h3').textContent = panel.title;
      const body = p.box.querySelector('.body');
      if (panel.kind === 'chart') {
        if (!body.classList.contains('chart')) {
          body.classList.add('chart');
          body.setAttribute('role', 'img');
        }
        chartPanel(`${view.id}/${panel.id}`, panel, body);
      } else {
        // Drawn again at every snapshot ("3 s ago" moves on); a table keeps its rows and buttons
        // when only their cells changed.
        if (panel.kind === 'stats') renderStats(body, panel);
        else if (panel.kind === 'table') renderTable(body, panel, p);
        else if (panel.kind === 'log') renderLog(body, panel);
      }
      const actionsSig = JSON.stringify(panel.actions || []);
      if (actionsSig !== p.actionsSig) {
        p.actionsSig = actionsSig;
        const bar = p.box.querySelector('.panel-actions');
        bar.replaceChildren(...(panel.actions || []).map(actionButton));
      }
    }
    for (const [key, p] of s.panels)
      if (!seen.has(key)) {
        p.box.remove();
        s.panels.delete(key);
        const c = charts.get(key.replace('/chart/', '/'));
        if (c) {
          c.plot.destroy();
          charts.delete(key.replace('/chart/', '/'));
        }
      }
  }
  function renderStats(body, panel) {
    const list = el('dl', { class: 'stats' });
    for (const item of panel.items) {
      const d = el('div', { class: 'stat' });
      d.append(
        el('dt', { class: 'label', text: item.label }),
        el('dd', {
          class: `value ${item.level || ''}`,
          'data-stat': item.label,
          text: fmt(item.value, item.unit),
        }),
      );
      if (item.hint) d.append(el('dd', { class: 'hint', text: item.hint }));
      list.append(d);
    }
    body.replaceChildren(list);
  }
  function cellNode(cell) {
    if (typeof cell === 'string' || cell === null) return document.createTextNode(cell ?? '—');
    const span = el('span', { class: cell.level || '' });
    if (typeof cell.progress === 'number') {
      const pct = Math.round(Math.max(0, Math.min(1, cell.progress)) * 100);
      span.append(el('progress', { max: 100, value: pct, 'aria-label': `${pct} %` }));
    }
    span.append(document.createTextNode(fmt(cell.value, cell.unit)));
    return span;
  }
  function renderTable(body, panel, p) {
    const rowsSig = JSON.stringify([panel.columns, panel.rows.map((r) => [r.key, r.actions || []])]);
    const table = body.querySelector('table');
    if (table && rowsSig === p.rowsSig) {
      // Same rows and buttons: change the cells only, so a button being clicked stays where it is.
      panel.rows.forEach((row, i) => {
        const tr = table.tBodies[0].rows[i];
        row.cells.forEach((cell, j) => tr.cells[j].replaceChildren(cellNode(cell)));
      });
      const note = body.querySelector('.note');
      if (note) note.textContent = panel.note || '';
      return;
    }
    p.rowsSig = rowsSig;
    const hasActions = panel.rows.some((r) => r.actions && r.actions.length);
    const head = el('tr', {}, ...panel.columns.map((c) => el('th', { scope: 'col', text: c })));
    if (hasActions) head.append(el('th', { scope: 'col', text: 'Actions' }));
    const tbody = el('tbody');
    for (const row of panel.rows) {
      const tr = el('tr', { 'data-row': row.key });
      for (const cell of row.cells) tr.append(el('td', {}, cellNode(cell)));
      if (hasActions) tr.append(el('td', { class: 'actions' }, ...(row.actions || []).map(actionButton)));
      tbody.append(tr);
    }
    const parts = [];
    if (panel.rows.length > 0)
      parts.push(el('div', { class: 'table-wrap' }, el('table', {}, el('thead', {}, head), tbody)));
    else parts.push(el('p', { class: 'empty', text: panel.empty || 'Nothing to show.' }));
    parts.push(el('p', { class: 'note', text: panel.note || '' }));
    body.replaceChildren(...parts);
  }
  function renderLog(body, panel) {
    if (panel.entries.length === 0)
      return body.replaceChildren(el('p', { class: 'empty', text: panel.empty || 'Nothing yet.' }));
    const list = el('ul', { class: 'log' });
    for (const e of panel.entries.slice().reverse())
      list.append(
        el(
          'li',
          { class: e.level === 'info' ? '' : e.level === 'warn' ? 'warn' : 'bad' },
          el('time', { datetime: new Date(e.at).toISOString(), text: ago(e.at) }),
          document.createTextNode(e.text),
        ),
      );
    body.replaceChildren(list);
  }

  // ---------- actions ----------
  function actionButton(action) {
    const b = el('button', {
      type: 'button',
      class: action.danger ? 'danger' : '',
      'aria-label': action.name || action.label,
      text: action.label,
    });
    b.addEventListener('click', () => void run(action));
    return b;
  }
  function confirmAction(text) {
    return new Promise((resolve) => {
      const d = $('confirm');
      $('confirm-text').textContent = text;
      d.returnValue = '';
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
    });
  }
  function showResult(title, text, bad) {
    $('result-title').textContent = title;
    $('result-title').className = bad ? 'bad' : '';
    $('result-body').textContent = text;
    $('result').hidden = false;
  }
  $('result-close').addEventListener('click', () => {
    $('result').hidden = true;
  });
  async function run(action) {
    if (!(await confirmAction(action.confirm))) return;
    showResult(`${action.name || action.label}: running…`, '', false);
    let res;
    try {
      res = await fetch(action.path, { method: action.method, headers: authHeaders() });
    } catch (err) {
      return showResult(
        `${action.name || action.label}: failed`,
        `The admin server could not be reached: ${err.message}`,
        true,
      );
    }
    const body = await res.text();
    if (res.status === 401) {
      showResult(
        `${action.name || action.label}: refused`,
        'Refused (401): this action needs the admin token. Enter it in the form above.',
        true,
      );
      askToken('Actions need the admin token (401).');
      return;
    }
    if (res.status === 403)
      return showResult(`${action.name || action.label}: refused`, `Refused (403): ${errorText(body)}`, true);
    if (!res.ok)
      return showResult(`${action.name || action.label}: failed (${res.status})`, errorText(body), true);
    let text = body;
    try {
      text = JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      // not JSON: shown as it came
    }
    showResult(`${action.name || action.label}: done`, text, false);
  }

  start();
})();
