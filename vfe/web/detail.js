// The job detail: the video's facts, live progress, a gallery of frames that grows as
// they are written, cancel/delete behind a confirmation, and the zip of all frames.
// It follows the job on its own stream (/job-status/{id}/events), which also carries
// `frame` events; the frames written before it connected come from GET /frames.
// The frames done ("Frames 13 / 1000") and the gallery's heading ("Frames (13)") are one
// count, of the frames the gallery holds: the job's processed_frames arrives in progress
// events about once a second, its frames one by one, so counting both would disagree.
// Until the first GET /frames has answered, the job's own count stands in for both.
// A thumbnail's tooltip gives the frame's quality metrics; a frame taken for a rejected
// one (substituted) carries a badge saying so.
import { errorText, frameUrl, getJSON, listen, request, zipUrl } from './api.js';
import { ask } from './confirm.js';
import { byTestId, el, imageBox, setText } from './dom.js';
import * as fmt from './format.js';
import { isNewer } from './jobs.js';

const ACTIVE = new Set(['pending', 'processing']);
const PAGE = 1000; // frames asked for per GET /frames (always with a limit)
const CATCH_UP_MS = 2000; // a gallery behind the job's count this long is reloaded

function modeText(view) {
  const o = view.options ?? {};
  switch (view.mode) {
    case 'interval':
      return `interval: every ${fmt.number(view.interval ?? o.interval)}\u00a0s`;
    case 'fps':
      return `fps: ${fmt.number(o.fps)} a second`;
    case 'count':
      return `count: ${o.count} frames`;
    case 'timestamps':
      return `timestamps: ${(o.timestamps ?? []).map((t) => fmt.number(t)).join(', ')}\u00a0s`;
    case 'scene': {
      const threshold = fmt.number(o.scene_threshold ?? 0.3);
      return `scene: threshold ${threshold}, min gap ${fmt.number(o.min_gap ?? 1)}\u00a0s`;
    }
    case 'best':
      return `best: the best frame of each of ${o.count} stretch${o.count === 1 ? '' : 'es'}`;
    default:
      return String(view.mode ?? '');
  }
}

function windowText(view) {
  const o = view.options ?? {};
  const parts = [];
  if (o.start || o.end) {
    const end = o.end ? `${fmt.number(o.end)}\u00a0s` : 'the end';
    parts.push(`${fmt.number(o.start ?? 0)}\u00a0s to ${end}`);
  }
  if (o.max_frames) parts.push(`at most ${o.max_frames} frames`);
  return parts.join(', ');
}

function outputText(view) {
  const o = view.options ?? {};
  const parts = [String(o.format ?? 'jpg').toUpperCase()];
  if (o.quality) parts.push(`quality ${o.quality}`);
  if (o.width || o.height) parts.push(`fit ${o.width ?? '∞'}×${o.height ?? '∞'}`);
  return parts.join(', ');
}

/** What frames the job refuses: "reject black, flat (search 0.5 s); dedupe within 6 bits". */
function choiceText(view) {
  const o = view.options ?? {};
  const parts = [];
  if (Array.isArray(o.reject) && o.reject.length) {
    const search = view.mode === 'best' ? '' : ` (search ${fmt.number(o.search ?? 1)}\u00a0s)`;
    parts.push(`reject ${o.reject.join(', ')}${search}`);
  }
  if (o.dedupe === true) parts.push(`dedupe within ${o.dedupe_distance ?? 6} bits`);
  return parts.join('; ');
}

/**
 * A count of the finished job's plan, shown when the plan has it and the job asked for
 * what it counts (`option`), or it is not 0: '' hides the line.
 */
function planCount(view, key, option) {
  const count = view.plan?.[key];
  if (typeof count !== 'number') return '';
  const o = view.options ?? {};
  const asked = option === 'reject' ? Array.isArray(o.reject) && o.reject.length > 0 : o[option] === true;
  return asked || count > 0 ? String(count) : '';
}

function planText(plan) {
  if (!plan) return '';
  const parts = [String(plan.strategy ?? '?')];
  if (plan.processes) parts.push(`${plan.processes} FFmpeg process${plan.processes === 1 ? '' : 'es'}`);
  if (plan.decoded_frames) parts.push(`${plan.decoded_frames} frames decoded`);
  return parts.join(', ');
}

/** "13 / 1000": frames done of the job's total (a scene job's total grows as it runs). */
const framesText = (view, done) => `${done} / ${Math.max(view.total_frames ?? 0, done)}`;

/**
 * The facts shown, in order: [key, label, text of a job view ('' hides the line)]. The
 * text is given the view and the number of frames done (see the top of this file).
 */
const FACTS = [
  ['status', 'Status', (v) => v.status],
  ['frames', 'Frames', framesText],
  ['elapsed', 'Run time', (v) => (v.elapsed_seconds == null ? '' : fmt.duration(v.elapsed_seconds))],
  ['created', 'Submitted', (v) => fmt.when(v.created_at)],
  ['error', 'Error', (v) => v.error_message ?? ''],
  ['duration', 'Duration', (v) => (v.duration == null ? '' : fmt.duration(v.duration))],
  ['fps', 'Frame rate', (v) => (v.fps == null ? '' : `${fmt.number(v.fps)} fps`)],
  ['size', 'Size', (v) => (v.width && v.height ? `${v.width}×${v.height}` : '')],
  ['codec', 'Codec', (v) => v.codec ?? ''],
  ['mode', 'Mode', modeText],
  ['window', 'Window', windowText],
  ['output', 'Output', outputText],
  ['choice', 'Frame choice', choiceText],
  ['plan', 'Plan', (v) => planText(v.plan)],
  ['rejected', 'Targets rejected', (v) => planCount(v, 'rejected_targets', 'reject')],
  ['duplicates', 'Duplicates dropped', (v) => planCount(v, 'dropped_duplicates', 'dedupe')],
  ['attempts', 'Attempts', (v) => (v.attempts > 1 ? String(v.attempts) : '')],
  ['source', 'Source', (v) => `${v.video_source}${v.source_type === 'upload' ? ' (upload)' : ''}`],
  ['id', 'Job id', (v) => v.job_id],
];

export class JobDetail {
  #root;
  #viewer;
  #confirm;
  #onClose;
  #onDeleted;
  #onView;
  #jobId = null;
  #view = null;
  #gone = false; // the job was deleted while shown
  #stream = null;
  #frames = []; // frame views in index order
  #thumbs = new Map(); // frame index -> <li>
  #framesLoaded = false; // a GET /frames answered: #frames holds every frame written
  #catchUp = null; // timer of a reload of the frames, when the gallery fell behind

  /** `onView(view)` hears every newer view of the job; `onDeleted(jobId)` a deletion made here. */
  constructor(root, { viewer, confirmDialog, onClose, onDeleted, onView }) {
    this.#root = root;
    this.#viewer = viewer;
    this.#confirm = confirmDialog;
    this.#onClose = onClose;
    this.#onDeleted = onDeleted;
    this.#onView = onView;
    const find = (id) => byTestId(id, root);
    this.ui = {
      title: root.querySelector('.detail-source'),
      notice: root.querySelector('.detail-notice'),
      error: root.querySelector('.detail-error'),
      progress: find('job-detail-progress'),
      facts: find('job-facts'),
      cancel: find('cancel-button'),
      remove: find('delete-button'),
      zip: find('download-all'),
      gallery: find('gallery'),
      count: root.querySelector('.frame-count'),
      empty: root.querySelector('.gallery-empty'),
    };
    this.factNodes = new Map();
    for (const [key, label] of FACTS) {
      const dt = el('dt', { text: label });
      const dd = el('dd', { dataset: { fact: key } });
      const row = el('div', { class: 'fact', dataset: { fact: key } }, dt, dd);
      this.ui.facts.append(row);
      this.factNodes.set(key, { row, dd });
    }
    find('close-detail').addEventListener('click', () => this.#onClose());
    root.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !document.querySelector('dialog[open]')) this.#onClose();
    });
    this.ui.cancel.addEventListener('click', () => this.#remove(true));
    this.ui.remove.addEventListener('click', () => this.#remove(false));
    this.ui.gallery.addEventListener('click', (event) => {
      const thumb = event.target.closest('[data-testid="frame-thumb"]');
      if (!thumb) return;
      const position = this.#frames.findIndex((f) => f.index === Number(thumb.dataset.index));
      if (position >= 0) this.#viewer.open(() => this.#frames, position);
    });
  }

  get jobId() {
    return this.#jobId;
  }

  /** Show job `jobId` and follow it live; `focus` moves the keyboard focus to it. */
  async open(jobId, { focus = false } = {}) {
    if (jobId === this.#jobId) {
      if (focus) this.#focus();
      return;
    }
    this.#reset();
    this.#jobId = jobId;
    this.#root.dataset.jobId = jobId;
    this.#root.hidden = false;
    setText(this.ui.title, '');
    setText(this.ui.notice, 'Loading…');
    this.ui.zip.href = zipUrl(jobId);
    if (focus) this.#focus();
    const answer = await getJSON(`/job-status/${encodeURIComponent(jobId)}`);
    if (jobId !== this.#jobId) return; // another job was opened meanwhile
    if (!answer.ok) {
      const missing = 'This job does not exist (it may have been deleted).';
      setText(this.ui.notice, answer.status === 404 ? missing : errorText(answer));
      this.#setActions(null);
      return;
    }
    setText(this.ui.notice, '');
    this.update(answer.body);
    this.#follow(jobId);
  }

  /** Load the job shown again, from scratch (after a new API key: images and stream). */
  reload() {
    const jobId = this.#jobId;
    if (jobId === null) return;
    this.#jobId = null;
    this.open(jobId);
  }

  /** Hide the detail and stop following its job. */
  close() {
    this.#reset();
    this.#root.hidden = true;
  }

  /** A newer view of the job shown (from its own stream or the job list's). */
  update(view) {
    if (view?.job_id !== this.#jobId || this.#gone || !isNewer(view, this.#view)) return;
    this.#view = view;
    this.#root.dataset.status = view.status;
    setText(this.ui.title, view.video_source);
    this.ui.progress.value = Number.isFinite(view.percent) ? view.percent : 0;
    for (const [key, , text] of FACTS) {
      const { row, dd } = this.factNodes.get(key);
      const value = text(view, this.#done()) ?? '';
      setText(dd, value);
      row.hidden = value === '';
    }
    this.factNodes.get('status').dd.dataset.status = view.status;
    this.#setActions(view);
    this.#updateCount();
    this.#watchBehind(view);
    this.#onView(view);
  }

  /** The job was deleted (here or by another client). */
  removed(jobId) {
    if (jobId !== this.#jobId) return;
    this.#gone = true;
    this.#stopFollowing();
    clearTimeout(this.#catchUp);
    this.#setActions(null);
    this.#frames = [];
    this.#thumbs.clear();
    this.ui.gallery.replaceChildren();
    this.#viewer.close();
    setText(this.ui.notice, 'This job was deleted.');
    this.#updateCount();
  }

  #focus() {
    const still = matchMedia('(prefers-reduced-motion: reduce)').matches;
    this.#root.scrollIntoView({ block: 'start', behavior: still ? 'auto' : 'smooth' });
    this.#root.focus({ preventScroll: true });
  }

  #reset() {
    this.#stopFollowing();
    this.#viewer.close();
    this.#jobId = null;
    this.#view = null;
    this.#gone = false;
    this.#frames = [];
    this.#thumbs.clear();
    this.#framesLoaded = false;
    clearTimeout(this.#catchUp);
    this.#catchUp = null;
    this.ui.gallery.replaceChildren();
    delete this.#root.dataset.jobId;
    delete this.#root.dataset.status;
    for (const { row, dd } of this.factNodes.values()) {
      setText(dd, '');
      row.hidden = true;
    }
    this.ui.progress.value = 0;
    setText(this.ui.error, '');
    setText(this.ui.notice, '');
    this.#setActions(null);
    this.#updateCount();
  }

  #follow(jobId) {
    const source = new EventSource(`/job-status/${encodeURIComponent(jobId)}/events`);
    this.#stream = source;
    const update = (view) => this.update(view);
    const finish = (view) => {
      this.update(view);
      this.#stopFollowing(); // the server ends the stream; do not let the browser reconnect
      this.#loadFrames(jobId); // catch up on any frame event a slow stream dropped
    };
    listen(source, {
      // Sent first on every (re)connection: fetch what was written while not connected.
      snapshot: (view) => {
        setText(this.ui.notice, '');
        this.update(view);
        this.#loadFrames(jobId);
      },
      status: update,
      progress: update,
      frame: (frame) => this.#addFrame(frame),
      done: finish,
      failed: finish,
      cancelled: finish,
    });
    source.addEventListener('error', () => {
      if (source !== this.#stream) return;
      if (source.readyState === EventSource.CONNECTING) {
        setText(this.ui.notice, 'Connection lost; reconnecting…');
        return;
      }
      // Refused for good: show what there is now; the job list's events still update it.
      this.#stopFollowing();
      setText(this.ui.notice, 'Live updates are not available for this job; reopen it to refresh.');
      this.#loadFrames(jobId);
    });
  }

  #stopFollowing() {
    this.#stream?.close();
    this.#stream = null;
  }

  async #loadFrames(jobId) {
    for (let offset = 0; ; offset += PAGE) {
      const answer = await getJSON(`/frames/${encodeURIComponent(jobId)}?offset=${offset}&limit=${PAGE}`);
      if (jobId !== this.#jobId || !answer.ok) return;
      for (const frame of answer.body.frames ?? []) this.#addFrame(frame);
      if (offset + PAGE >= (answer.body.total_count ?? 0)) break;
    }
    if (this.#framesLoaded) return;
    this.#framesLoaded = true; // from now on the gallery is the count
    this.#updateCount();
  }

  /**
   * Frames done: those in the gallery, once it was loaded; until then the job's count
   * (or the frames that already came, if more).
   */
  #done() {
    if (this.#framesLoaded) return this.#frames.length;
    return Math.max(this.#view?.processed_frames ?? 0, this.#frames.length);
  }

  /**
   * A running job's count ahead of its gallery is usual for a moment (the job list's
   * stream can bring a view before this stream brings its frames); still behind after
   * CATCH_UP_MS, a frame event was lost (a slow client's events are dropped): reload.
   */
  #watchBehind(view) {
    const ahead = view.processed_frames ?? 0;
    if (this.#catchUp || !this.#framesLoaded || !ACTIVE.has(view.status)) return;
    if (ahead <= this.#frames.length) return;
    const jobId = this.#jobId;
    this.#catchUp = setTimeout(() => {
      this.#catchUp = null;
      if (jobId === this.#jobId && this.#frames.length < ahead) this.#loadFrames(jobId);
    }, CATCH_UP_MS);
  }

  #addFrame(frame) {
    if (frame?.job_id !== this.#jobId || this.#gone || this.#thumbs.has(frame.index)) return;
    // Parallel FFmpeg pieces write out of time order: keep the gallery sorted by index.
    let position = this.#frames.length;
    while (position > 0 && this.#frames[position - 1].index > frame.index) position -= 1;
    const next = this.#frames[position];
    this.#frames.splice(position, 0, frame);
    const item = this.#thumb(frame);
    this.#thumbs.set(frame.index, item);
    this.ui.gallery.insertBefore(item, next ? this.#thumbs.get(next.index) : null);
    this.#updateCount();
    this.#viewer.refresh();
  }

  #thumb(frame) {
    // The alt says the time and names the button: the time under it is not read twice.
    const image = imageBox({
      src: frameUrl(frame),
      alt: `Frame at ${fmt.seconds(frame.timestamp)}`,
      loading: 'lazy',
      decoding: 'async',
      width: frame.width || null,
      height: frame.height || null,
    });
    const time = el('span', {
      class: 'frame-time',
      'data-testid': 'frame-time',
      'aria-hidden': 'true',
      text: fmt.seconds(frame.timestamp),
    });
    // Its metrics in the tooltip, under its time; a substitute says so in a badge too.
    const why = fmt.substitution(frame);
    const title = [fmt.seconds(frame.timestamp), ...fmt.frameMetrics(frame)];
    if (why) title.push(why);
    const badge = why
      ? el('span', { class: 'frame-badge', 'data-testid': 'frame-substituted', title: why }, 'substituted')
      : null;
    const button = el(
      'button',
      {
        type: 'button',
        class: 'frame-thumb',
        'data-testid': 'frame-thumb',
        dataset: { index: frame.index },
        title: title.join('\n'),
      },
      image,
      time,
      badge,
    );
    return el('li', {}, button);
  }

  #updateCount() {
    const count = this.#done();
    setText(this.ui.count, count ? `(${count})` : '');
    if (this.#view) {
      const { row, dd } = this.factNodes.get('frames');
      setText(dd, framesText(this.#view, count));
      row.hidden = false;
    }
    const active = this.#view && ACTIVE.has(this.#view.status);
    this.ui.empty.hidden = count > 0 || !this.#view;
    setText(this.ui.empty, active ? 'No frames yet.' : 'No frames.');
  }

  #setActions(view) {
    this.ui.cancel.hidden = !view || !ACTIVE.has(view.status);
    this.ui.remove.hidden = !view || ACTIVE.has(view.status);
    this.ui.zip.hidden = !view;
  }

  async #remove(cancelling) {
    const jobId = this.#jobId;
    const name = this.#view?.video_source ?? jobId;
    const sure = await ask(this.#confirm, {
      title: cancelling ? 'Cancel this job?' : 'Delete this job?',
      text: cancelling
        ? `Extraction of “${name}” stops, and the job and its frames are removed.`
        : `The job “${name}” and its frames are removed.`,
      yes: cancelling ? 'Cancel job' : 'Delete job',
      no: cancelling ? 'Keep it running' : 'Keep it',
    });
    if (!sure || jobId !== this.#jobId) return;
    setText(this.ui.error, '');
    const answer = await request('DELETE', `/job/${encodeURIComponent(jobId)}`);
    if (answer.ok || answer.status === 404) this.#onDeleted(jobId);
    else if (jobId === this.#jobId) setText(this.ui.error, errorText(answer));
  }
}
