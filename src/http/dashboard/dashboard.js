// localtune dashboard: polls the public /v1 API (jobs, events, checkpoints, models) and draws the training curves as SVG.
// Everything shown comes from the API as text: model output and file names are set with textContent, never as HTML.

const KEY_STORAGE = 'localtune.apiKey';
const POLL_MS = 1500;
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

const state = {
  apiKey: localStorage.getItem(KEY_STORAGE) || '',
  jobs: [],
  selectedJobId: new URLSearchParams(location.hash.slice(1)).get('job'),
  /** Per job: every event seen, oldest first, and the newest id (the next poll reads only what is newer). */
  events: new Map(),
  chat: [],
  /** The playground's model, once the user picked one. */
  chatModel: null,
  /** Checkpoints (by step) whose answer samples the user opened or closed; the others follow "newest open". */
  answerToggles: new Map(),
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  // With no keys configured the server accepts any bearer token; with keys it needs the user's.
  headers.authorization = `Bearer ${state.apiKey || 'dashboard'}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`../v1${path}`, { ...init, headers });
  if (res.status === 401) {
    showKeyForm(state.apiKey ? 'That key was refused.' : '');
    throw new ApiError(401, 'an API key is needed');
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = (await res.json()).error.message || message;
    } catch { /* not an error envelope: keep the status line */ }
    throw new ApiError(res.status, message);
  }
  return init.raw ? res : res.json();
}

// ---- API key ---------------------------------------------------------------------------------------------

function showKeyForm(message) {
  $('key-form').hidden = false;
  $('key-error').textContent = message;
  $('forget-key').hidden = true;
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  state.apiKey = $('api-key').value.trim();
  localStorage.setItem(KEY_STORAGE, state.apiKey);
  $('key-form').hidden = true;
  $('forget-key').hidden = false;
  refreshAll();
});

$('forget-key').addEventListener('click', () => {
  localStorage.removeItem(KEY_STORAGE);
  state.apiKey = '';
  location.reload();
});

// ---- helpers ---------------------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

const time = (unix) => (unix ? new Date(unix * 1000).toLocaleString() : '–');
const num = (x, digits = 4) => (typeof x === 'number' ? x.toFixed(digits) : '–');

function fillFields(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v === null || v === undefined || v === '' ? '–' : String(v) })]));
}

// ---- job list --------------------------------------------------------------------------------------------

async function refreshJobs() {
  const page = await api('/fine_tuning/jobs?limit=100');
  state.jobs = page.data;
  $('jobs-empty').hidden = page.data.length > 0;
  $('job-list').replaceChildren(...page.data.map((job) => el('li', {},
    el('button', { type: 'button', 'aria-current': String(job.id === state.selectedJobId), 'data-job-id': job.id, onclick: () => selectJob(job.id) },
      el('span', { class: 'job-id', text: job.id }),
      el('span', {}, el('span', { class: `status status-${job.status}`, text: job.status })),
      el('span', { class: 'job-meta', text: `${job.model}${job.user_provided_suffix ? ` · ${job.user_provided_suffix}` : ''} · ${time(job.created_at)}` })))));
  if (!state.selectedJobId && page.data.length) selectJob(page.data[0].id);
}

function selectJob(id) {
  if (id !== state.selectedJobId) state.answerToggles.clear();
  state.selectedJobId = id;
  history.replaceState(null, '', `#job=${encodeURIComponent(id)}`);
  for (const b of document.querySelectorAll('#job-list button')) b.setAttribute('aria-current', String(b.dataset.jobId === id));
  refreshJob();
}

// ---- one job ---------------------------------------------------------------------------------------------

const eventReads = new Map();

/** One read at a time per job: two overlapping reads would both append the same new events. */
function refreshEvents(jobId) {
  const read = (eventReads.get(jobId) || Promise.resolve()).catch(() => {}).then(() => readNewEvents(jobId));
  eventReads.set(jobId, read);
  return read;
}

/** Reads the events newer than the last one seen (newest first, paged with `after`) and appends them oldest first. */
async function readNewEvents(jobId) {
  const known = state.events.get(jobId) || { list: [], newestId: null };
  const fresh = [];
  let after = '';
  for (;;) {
    const page = await api(`/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    const stop = page.data.findIndex((e) => e.id === known.newestId);
    fresh.push(...(stop >= 0 ? page.data.slice(0, stop) : page.data));
    if (stop >= 0 || !page.has_more || page.data.length === 0) break;
    after = page.data[page.data.length - 1].id;
  }
  fresh.reverse();
  known.list.push(...fresh);
  if (fresh.length) known.newestId = fresh[fresh.length - 1].id;
  state.events.set(jobId, known);
  return known.list;
}

async function refreshJob() {
  const id = state.selectedJobId;
  if (!id) return;
  let job;
  try {
    job = await api(`/fine_tuning/jobs/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 404) {
      state.selectedJobId = null;
      $('job-detail').hidden = true;
      $('job-placeholder').hidden = false;
      return;
    }
    throw err;
  }
  const [events, checkpoints] = await Promise.all([
    refreshEvents(id),
    api(`/fine_tuning/jobs/${encodeURIComponent(id)}/checkpoints?limit=100`),
  ]);
  if (state.selectedJobId !== id) return;
  renderJob(job, events, checkpoints.data);
}

function renderJob(job, events, checkpoints) {
  $('job-placeholder').hidden = true;
  $('job-detail').hidden = false;
  $('job-detail').dataset.jobId = job.id;
  $('job-title').textContent = job.id;
  const status = $('job-status');
  status.textContent = job.status;
  status.className = `status status-${job.status}`;
  $('job-pause').hidden = !(job.status === 'running' || job.status === 'queued');
  $('job-resume').hidden = job.status !== 'paused';
  $('job-cancel').hidden = FINISHED.has(job.status);

  const metrics = events.filter((e) => e.type === 'metrics' && e.data && typeof e.data.step === 'number').map((e) => e.data);
  const last = metrics[metrics.length - 1];
  const total = last?.total_steps;
  const done = job.status === 'succeeded' ? 1 : last && total ? last.step / total : 0;
  $('job-progress-bar').style.width = `${Math.round(done * 100)}%`;
  $('job-progress-text').textContent = last
    ? `step ${last.step}${total ? ` of ${total}` : ''} · training loss ${num(last.train_loss)}${last.valid_loss !== undefined ? ` · validation loss ${num(last.valid_loss)}` : ''}` +
      (job.estimated_finish && !FINISHED.has(job.status) ? ` · estimated finish ${time(job.estimated_finish)}` : '')
    : job.status === 'succeeded' ? '' : 'waiting for the first training step…';
  const err = job.error && job.error.message;
  $('job-error').hidden = !err;
  $('job-error').textContent = err ? `${job.error.code ? `${job.error.code}: ` : ''}${err}` : '';

  drawChart($('loss-chart'), $('loss-legend'), metrics, total, [
    { name: 'training', key: 'train_loss', cls: 'train' },
    { name: 'validation', key: 'valid_loss', cls: 'valid' },
  ], { minZero: true, log: $('loss-log').checked });
  drawChart($('accuracy-chart'), $('accuracy-legend'), metrics, total, [
    { name: 'training', key: 'train_mean_token_accuracy', cls: 'train' },
    { name: 'validation', key: 'valid_mean_token_accuracy', cls: 'valid' },
    // DPO jobs also report how often the preferred output wins (absent from supervised jobs, so not drawn there).
    { name: 'reward accuracy', key: 'train_reward_accuracy', cls: 'reward' },
  ], { fixed: [0, 1] });
  // Scored at epoch ends of jobs with a validation file (DPO adds how often the answer is nearer the preferred output).
  drawChart($('answers-chart'), $('answers-legend'), metrics, total, [
    { name: 'exact match', key: 'valid_exact_match', cls: 'exact' },
    { name: 'similarity (chrF)', key: 'valid_answer_similarity', cls: 'similar' },
    { name: 'closer to preferred', key: 'valid_closer_to_preferred', cls: 'reward' },
  ], { fixed: [0, 1], dots: true, empty: job.validation_file ? 'answers are scored at each epoch end' : 'needs a validation file' });

  fillFields($('job-fields'), [
    ['base model', job.model],
    ['tuned model', job.fine_tuned_model],
    ['created', time(job.created_at)],
    ['finished', time(job.finished_at)],
    ['trained tokens', job.trained_tokens],
    ['training file', job.training_file],
    ['validation file', job.validation_file],
    ['seed', job.seed],
    ['suffix', job.user_provided_suffix],
    ['metadata', job.metadata && Object.keys(job.metadata).length ? JSON.stringify(job.metadata) : null],
  ]);
  const method = job.method && job.method.type;
  const hp = (method && job.method[method] && job.method[method].hyperparameters) || job.hyperparameters || {};
  const shown = (v) => (typeof v === 'object' && v !== null ? (Array.isArray(v) ? v.join(', ') : JSON.stringify(v)) : v);
  fillFields($('job-hyperparameters'), [
    ['method', method || 'supervised'],
    ...Object.entries(hp).map(([k, v]) => [k, shown(v)]),
    // localtune's `lora` extension: the adapter's rank, alpha, dropout and target modules.
    ...Object.entries(job.lora || {}).map(([k, v]) => [`lora ${k}`, shown(v)]),
  ]);

  renderModels(job, checkpoints);
  renderAnswerSamples(checkpoints);
  $('event-list').replaceChildren(...events.filter((e) => e.type !== 'metrics').reverse().map((e) =>
    el('li', { class: `level-${e.level}` }, el('time', { text: time(e.created_at) }), el('span', { text: e.message }))));
}

function renderModels(job, checkpoints) {
  const rows = checkpoints.map((c) => ({ step: c.step_number, model: c.fine_tuned_model_checkpoint, trainLoss: c.metrics.train_loss, validLoss: c.metrics.valid_loss ?? c.metrics.full_valid_loss }));
  if (job.fine_tuned_model && !rows.some((r) => r.model === job.fine_tuned_model)) rows.unshift({ step: 'final', model: job.fine_tuned_model });
  $('checkpoint-table').hidden = rows.length === 0;
  $('models-empty').hidden = rows.length > 0;
  $('checkpoint-table').tBodies[0].replaceChildren(...rows.map((r) => el('tr', {},
    el('td', { text: String(r.step) }),
    el('td', { class: 'model-id', text: r.model }),
    el('td', { text: num(r.trainLoss) }),
    el('td', { text: num(r.validLoss) }),
    el('td', {}, el('button', { type: 'button', onclick: () => chooseChatModel(r.model) }, 'Chat')))));
  $('result-files').replaceChildren(...job.result_files.map((fileId) =>
    el('button', { type: 'button', class: 'link-button', onclick: () => download(fileId) }, `download ${fileId} (step metrics CSV)`)));
}

/** Per checkpoint (newest first, the newest open): its answer scores and the sample prompts with reference and answer. */
function renderAnswerSamples(checkpoints) {
  const scored = checkpoints.filter((c) => Array.isArray(c.metrics.valid_samples)).sort((a, b) => b.step_number - a.step_number);
  $('answers-section').hidden = scored.length === 0;
  $('answer-samples').replaceChildren(...scored.map((c, i) => {
    const m = c.metrics;
    const scores = [`exact match ${num(m.valid_exact_match, 2)}`, `similarity ${num(m.valid_answer_similarity, 2)}`];
    if (typeof m.valid_closer_to_preferred === 'number') scores.push(`closer to preferred ${num(m.valid_closer_to_preferred, 2)}`);
    const step = c.step_number;
    const details = el('details', { class: 'answer-checkpoint', 'data-step': String(step) },
      el('summary', { text: `step ${step} · ${scores.join(' · ')}`, onclick: () => state.answerToggles.set(step, !details.open) }),
      el('div', { class: 'table-wrap' }, el('table', { class: 'answer-samples' },
        el('thead', {}, el('tr', {}, el('th', { text: 'prompt' }), el('th', { text: 'reference' }), el('th', { text: 'answer' }))),
        el('tbody', {}, ...m.valid_samples.map((s) => el('tr', {},
          el('td', { text: s.prompt }),
          el('td', { text: s.reference }),
          el('td', { class: s.answer.replace(/\s+/g, ' ').trim() === s.reference.replace(/\s+/g, ' ').trim() ? 'exact' : '', text: s.answer })))))));
    details.open = state.answerToggles.has(step) ? state.answerToggles.get(step) : i === 0;
    return details;
  }));
}

async function download(fileId) {
  const res = await api(`/files/${encodeURIComponent(fileId)}/content`, { raw: true });
  const url = URL.createObjectURL(await res.blob());
  el('a', { href: url, download: `${fileId}.csv` }).click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

for (const action of ['pause', 'resume', 'cancel']) {
  $(`job-${action}`).addEventListener('click', async () => {
    if (action === 'cancel' && !confirm('Cancel this job? Its progress is discarded.')) return;
    try {
      await api(`/fine_tuning/jobs/${encodeURIComponent(state.selectedJobId)}/${action}`, { method: 'POST' });
    } catch (err) {
      alert(err.message);
    }
    refreshAll();
  });
}

$('loss-log').addEventListener('change', () => refreshJob());

// ---- charts ----------------------------------------------------------------------------------------------

/** 1, 2 or 5 times a power of ten, so axis labels stay short. */
function niceStep(range, ticks) {
  const raw = range / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Draws one line per series over the steps (x up to the job's total, so the curve grows across the chart). */
/** y from `top` (the largest tick) to `bottom` (the smallest); `round` extends the top to a whole tick. */
function linearScale([min, max], round, top, bottom) {
  if (max - min < 1e-9) max = min + 1;
  const step = niceStep(max - min, 4);
  if (round) max = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = min; v <= max + step / 2; v += step) ticks.push(v);
  return { y: (v) => top + (1 - (v - min) / (max - min)) * (bottom - top), ticks };
}

/** Powers of ten around the data, so a loss falling from ~20 to ~0.004 stays readable. */
function logScale(values, top, bottom) {
  const floor = 1e-6;
  const lo = Math.floor(Math.log10(Math.max(floor, Math.min(...values))));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(floor, Math.max(...values)))));
  const ticks = [];
  for (let k = lo; k <= hi; k++) ticks.push(10 ** k);
  return { y: (v) => top + (1 - (Math.log10(Math.max(floor, v)) - lo) / (hi - lo)) * (bottom - top), ticks };
}

function drawChart(chart, legend, metrics, totalSteps, series, { minZero = false, fixed = null, log = false, dots = false, empty = 'no training steps yet' } = {}) {
  // Drawn at the element's own width, so labels keep their size from phone to desktop.
  const W = Math.max(300, Math.round(chart.clientWidth || 640)), H = Math.round(Math.min(280, Math.max(190, W * 0.4))), L = 46, R = 14, T = 12, B = 34;
  chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const lines = series.map((s) => ({ ...s, points: metrics.filter((m) => typeof m[s.key] === 'number' && Number.isFinite(m[s.key])).map((m) => [m.step, m[s.key]]) }))
    .filter((s) => s.points.length > 0);
  const count = lines.reduce((n, s) => n + s.points.length, 0);
  chart.dataset.points = String(count);
  legend.replaceChildren(...lines.map((s) => el('span', {}, el('i', { class: `swatch-${s.cls}` }), s.name)));
  if (count === 0) {
    chart.replaceChildren(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, empty));
    return;
  }
  const xs = lines.flatMap((s) => s.points.map((p) => p[0]));
  const ys = lines.flatMap((s) => s.points.map((p) => p[1]));
  const xMax = Math.max(totalSteps || 0, ...xs, 1);
  const x = (v) => L + ((v - 0) / xMax) * (W - L - R);
  const { y, ticks } = log ? logScale(ys, T, H - B) : linearScale(fixed || [minZero ? 0 : Math.min(...ys), Math.max(...ys)], !fixed, T, H - B);

  const nodes = [];
  for (const v of ticks) {
    nodes.push(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    nodes.push(svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, Number(v.toPrecision(3)).toString()));
  }
  const xStep = Math.max(1, niceStep(xMax, 5));
  for (let v = 0; v <= xMax; v += xStep) {
    nodes.push(svg('text', { x: x(v), y: H - B + 16, 'text-anchor': 'middle' }, String(v)));
  }
  nodes.push(svg('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, 'step'));
  nodes.push(svg('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
  nodes.push(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
  for (const s of lines) {
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    nodes.push(svg('path', { d, class: `series series-${s.cls}`, 'data-points': s.points.length }));
    // Validation is measured every few steps (answers at epoch ends): dots show where.
    if (dots || s.cls === 'valid' || s.points.length === 1) {
      for (const p of s.points) nodes.push(svg('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, class: `dot-${s.cls}` }));
    }
  }
  chart.replaceChildren(...nodes);
}

// ---- playground ------------------------------------------------------------------------------------------

async function refreshModels() {
  const models = (await api('/models')).data;
  const select = $('chat-model');
  // The choice lives in state, not in the element: a refresh that started before a "Chat" click must not undo it.
  const chosen = state.chatModel || select.value;
  const label = (m) => (m.alias_for ? `${m.id} → ${m.alias_for}` : m.owned_by === 'system' ? `${m.id} (base)` : m.id);
  select.replaceChildren(...models.map((m) => el('option', { value: m.id }, label(m))));
  if (models.some((m) => m.id === chosen)) select.value = chosen;
  // Aliases are other names for these models, not models of their own.
  const own = models.filter((m) => !m.alias_for);
  const base = own.filter((m) => m.owned_by === 'system');
  $('server-info').textContent = `${base.length} base model${base.length === 1 ? '' : 's'}${base[0]?.device ? ` · ${base[0].device}` : ''} · ${own.length - base.length} tuned`;
}

async function chooseChatModel(id) {
  state.chatModel = id;
  if (![...$('chat-model').options].some((o) => o.value === id)) await refreshModels();
  $('chat-model').value = id;
  $('playground').scrollIntoView({ behavior: 'smooth' });
  $('chat-input').focus();
}

function renderChat() {
  $('chat-log').replaceChildren(...state.chat.map((m) => el('li', { class: `from-${m.role}` },
    ...(m.model ? [el('span', { class: 'model-tag', text: m.model })] : []), m.content)));
}

$('chat-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const content = $('chat-input').value.trim();
  const model = $('chat-model').value;
  if (!content || !model) return;
  state.chat.push({ role: 'user', content });
  $('chat-input').value = '';
  $('chat-error').textContent = '';
  $('chat-send').disabled = true;
  renderChat();
  try {
    const res = await api('/chat/completions', {
      method: 'POST',
      body: JSON.stringify({
        model,
        messages: state.chat.map(({ role, content: text }) => ({ role, content: text })),
        temperature: Number($('chat-temperature').value),
        max_tokens: Number($('chat-max-tokens').value),
      }),
    });
    state.chat.push({ role: 'assistant', content: res.choices[0].message.content ?? '', model });
  } catch (err) {
    state.chat.pop();
    $('chat-input').value = content;
    $('chat-error').textContent = err.message;
  } finally {
    $('chat-send').disabled = false;
    renderChat();
  }
});

$('chat-model').addEventListener('change', () => {
  state.chatModel = $('chat-model').value;
});

$('chat-input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('chat-form').requestSubmit();
  }
});

$('chat-clear').addEventListener('click', () => {
  state.chat = [];
  renderChat();
});

// ---- polling ---------------------------------------------------------------------------------------------

let modelsShownFor = '';

async function refreshAll() {
  // Jobs and models refresh independently, so the playground works even when one of them fails.
  const [jobs] = await Promise.allSettled([refreshJobs().then(refreshJob), refreshModelsWhenChanged()]);
  const refused = [jobs].some((r) => r.status === 'rejected' && r.reason.status === 401);
  if (!refused) {
    $('key-form').hidden = true;
    $('forget-key').hidden = !state.apiKey;
  }
  $('jobs-error').hidden = jobs.status !== 'rejected' || refused;
  $('jobs-error').textContent = jobs.status === 'rejected' && !refused ? `Could not read jobs: ${jobs.reason.message}` : '';
}

/** New tuned models appear when a job succeeds: reload the model list when the set of tuned jobs changes. */
async function refreshModelsWhenChanged() {
  const tuned = state.jobs.filter((j) => j.fine_tuned_model).map((j) => j.id).join();
  if (tuned === modelsShownFor && $('chat-model').options.length) return;
  await refreshModels();
  modelsShownFor = tuned;
}

async function poll() {
  if (!document.hidden && $('key-form').hidden) await refreshAll();
  setTimeout(poll, POLL_MS);
}

refreshAll().then(() => setTimeout(poll, POLL_MS));
