// The live cluster monitor: one EventSource on /api/events gives a cluster view every second and the
// VDIs whenever they change. Plain ES module, no framework; everything user-controlled is set with
// textContent.

import { renderFamilies } from './family-tree.js';

const $ = (id) => document.getElementById(id);
const HISTORY_SECONDS = 120;
/** [time, read B/s, write B/s] for the rate chart */
const history = [];

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}
const rate = (n) => `${bytes(n)}/s`;
const num = (n) => Math.round(n).toLocaleString('en');

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function bar(fraction, cls, label) {
  const wrap = el('div', undefined, `bar ${cls ?? ''}`);
  const fill = el('div', undefined, 'fill');
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  wrap.append(fill, el('span', label));
  return wrap;
}

function renderCluster(v) {
  const status = $('status');
  status.textContent = v.cluster.statusText || v.cluster.status;
  status.className = `badge ${v.cluster.status === 'running' ? 'ok' : 'warn'}`;
  $('epoch').textContent = `epoch ${v.cluster.epoch}`;
  $('copies').textContent = v.cluster.copies ? `${v.cluster.copies} copies` : 'not formatted';
  $('served-by').textContent = `served by ${v.me}`;

  const up = v.nodes.filter((n) => n.state === 'up').length;
  $('nodes-up').textContent = `${up} / ${v.nodes.length}`;
  $('read-rate').textContent = rate(v.totals.readBps);
  $('read-iops').textContent = `${num(v.totals.readIops)} req/s`;
  $('write-rate').textContent = rate(v.totals.writeBps);
  $('write-iops').textContent = `${num(v.totals.writeIops)} req/s`;
  let used = 0, size = 0, objects = 0;
  for (const n of v.nodes) if (n.disk) { used += n.disk.used; size += n.disk.size; objects += n.objects ?? 0; }
  $('stored').textContent = bytes(used);
  $('stored-sub').textContent = `${num(objects)} objects, ${bytes(size)} of disk`;

  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  for (const n of v.nodes) {
    const tr = el('tr', undefined, `node ${n.state}`);
    tr.dataset.nid = n.nid;
    tr.dataset.state = n.state;
    const name = el('td', n.nid);
    if (n.me) name.append(el('small', ' (this sheep)'));
    const state = el('td', undefined);
    const stateText = n.state === 'down' ? `down since epoch ${n.leftAt}` : n.state === 'unreachable' ? 'unreachable' : 'up';
    state.append(el('span', stateText, `state ${n.state}`));
    if (n.disk?.failed) state.append(el('div', 'disk failed', 'state down'));
    else if (n.disk?.full) state.append(el('div', 'disk full', 'state warn'));
    const disk = el('td');
    if (n.disk && n.disk.size) {
      disk.append(bar(n.disk.used / n.disk.size, n.disk.full ? 'full' : '', `${bytes(n.disk.used)} / ${bytes(n.disk.size)}`));
    } else disk.textContent = '–';
    const share = el('td');
    share.append(bar(n.ringShare, 'share', `${(n.ringShare * 100).toFixed(1)}%`));
    const rec = el('td');
    const r = n.recovery;
    if (r && r.state === 'running') {
      rec.append(bar(r.total ? r.done / r.total : 0, 'recovery', `${num(r.done)} / ${num(r.total)}`));
      if (r.blocked) rec.append(el('div', 'waiting for space', 'state warn'));
    } else rec.textContent = r ? r.state : '–';
    tr.append(name, state, el('td', String(n.zone)), el('td', String(n.vnodes)), share, disk,
      el('td', n.objects !== undefined ? num(n.objects) : '–'),
      el('td', n.io ? rate(n.io.readBps) : '–'), el('td', n.io ? rate(n.io.writeBps) : '–'), rec);
    body.append(tr);
  }

  renderRecovery(v.nodes);
  renderEpochs(v.epochs);
  history.push([v.time, v.totals.readBps, v.totals.writeBps]);
  while (history.length && history[0][0] < v.time - HISTORY_SECONDS * 1000) history.shift();
  drawRates();
}

function renderRecovery(nodes) {
  const box = $('recovery');
  box.replaceChildren();
  const running = nodes.filter((n) => n.recovery && n.recovery.state !== 'idle');
  if (!running.length) {
    box.append(el('p', 'no recovery running', 'quiet'));
    return;
  }
  for (const n of running) {
    const r = n.recovery;
    const row = el('div', undefined, 'recovery-row');
    row.dataset.nid = n.nid;
    row.append(el('div', n.nid, 'who'));
    if (r.state === 'waiting') {
      row.append(el('div', 'waiting: automatic recovery is disabled (collie node recovery enable)', 'state warn'));
    } else {
      const pct = r.total ? (100 * r.done) / r.total : 0;
      row.append(bar(r.total ? r.done / r.total : 0, 'recovery', `epoch ${r.epoch}: ${num(r.done)} of ${num(r.total)} objects (${pct.toFixed(0)}%)`));
      const detail = `${r.rate.toFixed(1)} objects/s, ${num(r.copied)} copied${r.kept ? `, ${num(r.kept)} kept` : ''}`;
      row.append(el('div', detail, 'sub'));
      if (r.blocked) row.append(el('div', r.blocked, 'state warn'));
    }
    box.append(row);
  }
}

function renderEpochs(epochs) {
  const body = $('epochs').tBodies[0];
  body.replaceChildren();
  epochs.forEach((e, i) => {
    const older = epochs[i + 1];
    let change = '';
    if (older) {
      const was = new Set(older.nodes);
      const now = new Set(e.nodes);
      const joined = e.nodes.filter((n) => !was.has(n));
      const left = older.nodes.filter((n) => !now.has(n));
      change = [...joined.map((n) => `+${n}`), ...left.map((n) => `−${n}`)].join(' ') || 'vnodes changed';
    }
    const tr = el('tr');
    body.append(tr);
    tr.append(el('td', String(e.epoch)), el('td', new Date(e.time).toLocaleString('en-GB')), el('td', e.nodes.join(', ')), el('td', change));
  });
}

function renderVdis(v) {
  const working = v.vdis.filter((x) => !x.snapshot).length;
  $('vdi-count').textContent = String(working);
  const snaps = v.vdis.length - working;
  $('snap-count').textContent = `${snaps} snapshot${snaps === 1 ? '' : 's'}`;
  const body = $('vdis').tBodies[0];
  body.replaceChildren();
  for (const x of v.vdis) {
    const tr = el('tr', undefined, x.snapshot ? 'snapshot' : '');
    tr.append(el('td', x.name), el('td', x.vid.toString(16)), el('td', bytes(x.size)),
      el('td', x.snapshot ? String(x.snapId) : ''), el('td', x.tag), el('td', String(x.copies)),
      el('td', new Date(x.created * 1000).toLocaleString('en-GB')));
    body.append(tr);
  }
  renderFamilies($('families'), v.families);
}

function drawRates() {
  const c = $('rates');
  const ctx = c.getContext('2d');
  const w = c.width, h = c.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1024 * 1024, ...history.map((p) => Math.max(p[1], p[2])));
  ctx.strokeStyle = '#d0d7de';
  ctx.fillStyle = '#57606a';
  ctx.font = '11px sans-serif';
  ctx.beginPath();
  ctx.moveTo(pad, h - pad); ctx.lineTo(w, h - pad);
  ctx.stroke();
  ctx.fillText(rate(max), 2, 12);
  ctx.fillText(`${HISTORY_SECONDS} s ago`, pad, h - 6);
  ctx.fillText('now', w - 24, h - 6);
  if (!history.length) return;
  const now = history[history.length - 1][0];
  const x = (t) => pad + ((w - pad) * (HISTORY_SECONDS * 1000 - (now - t))) / (HISTORY_SECONDS * 1000);
  const y = (v) => h - pad - ((h - pad - 16) * v) / max;
  for (const [i, color] of [[1, '#0969da'], [2, '#cf222e']]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, k) => (k ? ctx.lineTo(x(p[0]), y(p[i])) : ctx.moveTo(x(p[0]), y(p[i]))));
    ctx.stroke();
  }
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('cluster', (e) => renderCluster(JSON.parse(e.data)));
  es.addEventListener('vdis', (e) => renderVdis(JSON.parse(e.data)));
  es.onopen = () => { $('live').textContent = 'live'; $('live').className = 'live on'; };
  // the browser reconnects by itself; say so meanwhile
  es.onerror = () => { $('live').textContent = 'reconnecting…'; $('live').className = 'live off'; };
}

connect();
