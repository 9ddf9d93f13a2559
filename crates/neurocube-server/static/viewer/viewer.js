// neurocube viewer: xy tiles from /v1/tiles, pan, zoom through levels,
// z by wheel or keys, z as a movie, a segmentation overlay, the frame rate
// reached. Plain JavaScript, no build step. URL parameters (all optional):
// ?ds=demo&ch=image&ov=segmentation&opacity=40&z=10&x=512&y=512&zoom=1&play=30
// and, for a server in token mode, &token=... (kept in a cookie, not the URL)
'use strict';

(() => {
  const TILE = 512;
  const MAX_BITMAPS = 600;
  const PARALLEL = 6;
  const $ = (id) => document.getElementById(id);
  const canvas = $('view');
  const ctx = canvas.getContext('2d');
  const params = new URLSearchParams(location.search);
  // A token in the page's URL goes into the cookie every request of the
  // page then carries, and out of the address bar (and so out of shared links).
  if (params.has('token')) {
    document.cookie = `neurocube_token=${encodeURIComponent(params.get('token'))}; path=/; SameSite=Strict`;
    params.delete('token');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? `?${q}` : '') + location.hash);
  }

  const view = {
    ds: null, meta: null, channels: [], ch: null, ov: '',
    opacity: 0.4, z: 0, cx: 0, cy: 0, zoom: 1,
    playing: false, rate: 30, lastStep: 0,
  };
  const tiles = new Map(); // url -> {bitmap, state: 'loading'|'ok'|'error'}
  const wanted = [];       // urls in priority order
  let inflight = 0;
  let dirty = true;
  let shownFrames = []; // timestamps of complete frames (distinct z)
  let lastCompleteZ = null;
  const status = { complete: false, drawnZ: null, level: 0, errors: 0, fps: 0 };

  async function json(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  function level() {
    // The coarsest level whose voxels still cover at least one screen pixel.
    const info = view.meta.level_info;
    let best = 0;
    for (let l = 0; l < info.length; l++) {
      if (info[l].factor[0] * view.zoom <= 1.0001) best = l;
    }
    return best;
  }

  function sliceOf(info) {
    const s = Math.floor(view.z / info.factor[2]);
    return Math.min(Math.max(s, info.offset[2]), info.offset[2] + info.extent[2] - 1);
  }

  function tileUrl(ch, l, slice, row, col) {
    return `/v1/tiles/${encodeURIComponent(view.ds)}/${encodeURIComponent(ch)}/xy/${TILE}/${l}/${slice}/${row}/${col}.png`;
  }

  // Tiles of one z covering the canvas: [{url, ch, x, y, w, h}] in screen pixels.
  function layout(z) {
    const l = level();
    const info = view.meta.level_info[l];
    const [fx, fy] = info.factor;
    const slice = Math.floor(z / info.factor[2]);
    if (slice < info.offset[2] || slice >= info.offset[2] + info.extent[2]) return { l, items: [] };
    const W = canvas.width, H = canvas.height;
    const toLevelX = (sx) => ((sx - W / 2) / view.zoom + view.cx) / fx;
    const toLevelY = (sy) => ((sy - H / 2) / view.zoom + view.cy) / fy;
    const cols = Math.ceil(info.extent[0] / TILE), rows = Math.ceil(info.extent[1] / TILE);
    const c0 = Math.max(0, Math.floor((toLevelX(0) - info.offset[0]) / TILE));
    const c1 = Math.min(cols - 1, Math.floor((toLevelX(W) - info.offset[0]) / TILE));
    const r0 = Math.max(0, Math.floor((toLevelY(0) - info.offset[1]) / TILE));
    const r1 = Math.min(rows - 1, Math.floor((toLevelY(H) - info.offset[1]) / TILE));
    const items = [];
    const chans = view.ov ? [view.ch, view.ov] : [view.ch];
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const lx = info.offset[0] + c * TILE, ly = info.offset[1] + r * TILE;
        const w = Math.min(TILE, info.offset[0] + info.extent[0] - lx);
        const h = Math.min(TILE, info.offset[1] + info.extent[1] - ly);
        const x = (lx * fx - view.cx) * view.zoom + W / 2;
        const y = (ly * fy - view.cy) * view.zoom + H / 2;
        for (const ch of chans) {
          items.push({ url: tileUrl(ch, l, slice, r, c), ch, x, y, w: w * fx * view.zoom, h: h * fy * view.zoom });
        }
      }
    }
    return { l, items };
  }

  function zRange() {
    const info = view.meta.level_info[0];
    return [info.offset[2], info.offset[2] + info.extent[2] - 1];
  }

  function request() {
    // The view changed: the frame on screen is no longer the complete one
    // (waiters, the movie and tests wait for the next draw to say so).
    status.complete = false;
    // Current z first, then the next slices in the direction of play.
    wanted.length = 0;
    const seen = new Set();
    const add = (z) => {
      for (const it of layout(z).items) {
        if (!seen.has(it.url)) { seen.add(it.url); wanted.push(it.url); }
      }
    };
    add(view.z);
    const [zmin, zmax] = zRange();
    const ahead = view.playing ? Math.max(6, Math.ceil(view.rate / 4)) : 3;
    for (let i = 1; i <= ahead; i++) {
      let z = view.z + i;
      if (z > zmax) z = zmin + (z - zmax - 1);
      add(z);
      if (!view.playing && view.z - i >= zmin) add(view.z - i);
    }
    pump();
  }

  function pump() {
    for (const url of wanted) {
      if (inflight >= PARALLEL) return;
      if (tiles.has(url)) continue;
      const entry = { bitmap: null, state: 'loading' };
      tiles.set(url, entry);
      inflight++;
      fetch(url)
        .then((r) => {
          if (!r.ok) throw new Error(`${r.status}`);
          return r.blob();
        })
        .then((b) => createImageBitmap(b))
        .then((bm) => { entry.bitmap = bm; entry.state = 'ok'; })
        .catch(() => { entry.state = 'error'; status.errors++; })
        .finally(() => { inflight--; dirty = true; evict(); pump(); });
    }
  }

  function evict() {
    if (tiles.size <= MAX_BITMAPS) return;
    const keep = new Set(wanted);
    for (const [url, e] of tiles) {
      if (tiles.size <= MAX_BITMAPS) break;
      if (e.state !== 'loading' && !keep.has(url)) {
        if (e.bitmap) e.bitmap.close();
        tiles.delete(url);
      }
    }
  }

  function touch(url) {
    const e = tiles.get(url);
    if (e) { tiles.delete(url); tiles.set(url, e); }
    return e;
  }

  function draw(now) {
    if (!view.meta) return;
    const { l, items } = layout(view.z);
    status.level = l;
    const complete = items.every((it) => { const e = tiles.get(it.url); return e && e.state !== 'loading'; });
    // While playing, keep the last complete frame until the next is whole.
    if (!complete && view.playing && status.drawnZ !== null) return;
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (const it of items) {
      const e = touch(it.url);
      if (!e || !e.bitmap) continue;
      ctx.globalAlpha = it.ch === view.ov ? view.opacity : 1;
      ctx.drawImage(e.bitmap, it.x, it.y, it.w, it.h);
    }
    ctx.globalAlpha = 1;
    status.complete = complete;
    status.drawnZ = view.z;
    if (complete && lastCompleteZ !== view.z) {
      lastCompleteZ = view.z;
      shownFrames.push(now);
    }
    $('info').textContent = `level ${l} · z ${view.z} · x ${Math.round(view.cx)} y ${Math.round(view.cy)} · zoom ${view.zoom.toFixed(3)}`;
  }

  function frame(now) {
    if (view.meta && view.playing && status.complete && status.drawnZ === view.z
        && now - view.lastStep >= 1000 / view.rate) {
      view.lastStep = now;
      const [zmin, zmax] = zRange();
      setZ(view.z >= zmax ? zmin : view.z + 1);
    }
    if (dirty) { dirty = false; draw(now); }
    shownFrames = shownFrames.filter((t) => now - t < 1000);
    status.fps = shownFrames.length;
    $('fps').textContent = `${shownFrames.length.toFixed(1)} frames/s`;
    requestAnimationFrame(frame);
  }

  function setZ(z) {
    const [zmin, zmax] = zRange();
    view.z = Math.min(Math.max(Math.round(z), zmin), zmax);
    $('z').value = view.z;
    status.complete = false;
    dirty = true;
    request();
  }

  function resize() {
    const r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width));
    canvas.height = Math.max(1, Math.round(r.height));
    dirty = true;
    if (view.meta) request();
  }

  function setZoom(zoom, sx, sy) {
    const W = canvas.width, H = canvas.height;
    const minZoom = 1 / (view.meta.level_info[view.meta.level_info.length - 1].factor[0] * 4);
    zoom = Math.min(Math.max(zoom, minZoom), 16);
    // Keep the voxel under the pointer in place.
    const vx = (sx - W / 2) / view.zoom + view.cx, vy = (sy - H / 2) / view.zoom + view.cy;
    view.zoom = zoom;
    view.cx = vx - (sx - W / 2) / zoom;
    view.cy = vy - (sy - H / 2) / zoom;
    dirty = true;
    request();
  }

  async function openDataset(ds) {
    view.ds = ds;
    view.meta = await json(`/v1/datasets/${encodeURIComponent(ds)}`);
    view.channels = (await json(`/v1/datasets/${encodeURIComponent(ds)}/channels`)).channels;
    const chSel = $('ch'), ovSel = $('ov');
    chSel.innerHTML = '';
    ovSel.innerHTML = '<option value="">none</option>';
    for (const c of view.channels) {
      chSel.add(new Option(`${c.name} (${c.type}, ${c.dtype})`, c.name));
      ovSel.add(new Option(c.name, c.name));
    }
    const image = view.channels.find((c) => c.type === 'image') || view.channels[0];
    view.ch = params.get('ch') || (image && image.name);
    chSel.value = view.ch;
    const seg = view.channels.find((c) => c.type === 'segmentation');
    view.ov = params.has('ov') ? params.get('ov') : (seg ? seg.name : '');
    ovSel.value = view.ov;
    const l0 = view.meta.level_info[0];
    view.cx = Number(params.get('x') ?? l0.offset[0] + l0.extent[0] / 2);
    view.cy = Number(params.get('y') ?? l0.offset[1] + l0.extent[1] / 2);
    view.zoom = Number(params.get('zoom') ?? Math.min(canvas.width / l0.extent[0], canvas.height / l0.extent[1], 1));
    $('z').max = l0.offset[2] + l0.extent[2] - 1;
    setZ(Number(params.get('z') ?? l0.offset[2]));
  }

  async function start() {
    resize();
    const list = (await json('/v1/datasets')).datasets;
    const dsSel = $('ds');
    for (const d of list) dsSel.add(new Option(d.name, d.name));
    const ds = params.get('ds') || (list.find((d) => d.name === 'demo') || list[0] || {}).name;
    if (!ds) { $('info').textContent = 'no datasets'; return; }
    dsSel.value = ds;
    $('opacity').value = params.get('opacity') ?? 40;
    view.opacity = Number($('opacity').value) / 100;
    await openDataset(ds);
    if (params.has('play')) { view.rate = Number(params.get('play')) || 30; $('rate').value = view.rate; togglePlay(); }
    requestAnimationFrame(frame);
  }

  function togglePlay() {
    view.playing = !view.playing;
    $('play').textContent = view.playing ? 'pause' : 'play';
    request();
  }

  // Controls.
  $('ds').addEventListener('change', (e) => { params.delete('ch'); params.delete('ov'); params.delete('x'); params.delete('y'); params.delete('zoom'); params.delete('z'); openDataset(e.target.value); });
  $('ch').addEventListener('change', (e) => { view.ch = e.target.value; dirty = true; request(); });
  $('ov').addEventListener('change', (e) => { view.ov = e.target.value; dirty = true; request(); });
  $('opacity').addEventListener('input', (e) => { view.opacity = Number(e.target.value) / 100; dirty = true; });
  $('z').addEventListener('change', (e) => setZ(Number(e.target.value)));
  $('rate').addEventListener('change', (e) => { view.rate = Math.max(1, Number(e.target.value) || 30); });
  $('play').addEventListener('click', togglePlay);
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    if (!view.meta) return;
    if (e.ctrlKey || e.metaKey) {
      const r = canvas.getBoundingClientRect();
      setZoom(view.zoom * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - r.left, e.clientY - r.top);
    } else {
      setZ(view.z + (e.deltaY > 0 ? 1 : -1));
    }
  }, { passive: false });
  let drag = null;
  canvas.addEventListener('pointerdown', (e) => { drag = { x: e.clientX, y: e.clientY }; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener('pointermove', (e) => {
    if (!drag) return;
    view.cx -= (e.clientX - drag.x) / view.zoom;
    view.cy -= (e.clientY - drag.y) / view.zoom;
    drag = { x: e.clientX, y: e.clientY };
    dirty = true;
    request();
  });
  canvas.addEventListener('pointerup', () => { drag = null; });
  window.addEventListener('keydown', (e) => {
    if (!view.meta || e.target.tagName === 'INPUT') return;
    const k = e.key;
    if (k === 'ArrowUp' || k === 'PageUp' || k === '.') setZ(view.z + 1);
    else if (k === 'ArrowDown' || k === 'PageDown' || k === ',') setZ(view.z - 1);
    else if (k === '+' || k === '=') setZoom(view.zoom * 1.25, canvas.width / 2, canvas.height / 2);
    else if (k === '-') setZoom(view.zoom * 0.8, canvas.width / 2, canvas.height / 2);
    else if (k === ' ') togglePlay();
    else return;
    e.preventDefault();
  });
  window.addEventListener('resize', resize);

  // For tests and the console: the state and a screen → voxel map.
  window.neurocube = {
    view, status,
    voxelAt(sx, sy) {
      const W = canvas.width, H = canvas.height;
      return [Math.floor((sx - W / 2) / view.zoom + view.cx), Math.floor((sy - H / 2) / view.zoom + view.cy), view.z];
    },
    setZ, setZoom, togglePlay,
  };
  start().catch((e) => { $('info').textContent = String(e); });
})();
