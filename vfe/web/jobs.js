// The job list: one row per job, newest first. app.js feeds it the views that GET /jobs
// and the /events stream carry; the list works out each running job's speed and time
// left from the successive progress views it sees.
import { el, setText } from './dom.js';
import * as fmt from './format.js';

const MAX_ROWS = 200;
const SMOOTHING = 0.5; // weight of the newest speed sample: steady, yet follows changes
export const DEFAULT_SCENE_THRESHOLD = 0.3; // the server's, when a scene job gives none

const time = (iso) => {
  const value = Date.parse(iso ?? '');
  return Number.isNaN(value) ? null : value;
};

/** Whether `next` is at least as recent as `current` (both job views of one job). */
export function isNewer(next, current) {
  if (!current) return true;
  const a = time(next.updated_at);
  const b = time(current.updated_at);
  return a === null || b === null || a >= b;
}

/** Newest first; a later created_at is a newer job. */
function newerFirst(a, b) {
  const order = (time(b.created_at) ?? 0) - (time(a.created_at) ?? 0);
  return order || String(b.created_at).localeCompare(String(a.created_at));
}

/**
 * Speed (frames/s) and time left of running jobs. Speed comes from frames done between
 * two views, time left from the percent done between them (in scene mode the frames
 * are not known ahead, the percent is); both are smoothed, and timed by the server's
 * updated_at so that a burst of buffered events does not look like a burst of work.
 */
class Pace {
  #samples = new Map();

  observe(view) {
    if (view.status !== 'processing') {
      this.#samples.delete(view.job_id);
      return;
    }
    const at = time(view.updated_at);
    const previous = this.#samples.get(view.job_id);
    if (at === null || (previous && at <= previous.at)) return;
    const sample = { at, frames: view.processed_frames, percent: view.percent, fps: null, rate: null };
    if (previous) {
      const dt = (at - previous.at) / 1000;
      // Each measure starts once its quantity first moves: probing and planning come first.
      const smooth = (old, from, to) => {
        if (old === null && to <= from) return null;
        const now = Math.max(0, (to - from) / dt);
        return old === null ? now : old + SMOOTHING * (now - old);
      };
      sample.fps = smooth(previous.fps, previous.frames, sample.frames);
      sample.rate = smooth(previous.rate, previous.percent, sample.percent);
    }
    this.#samples.set(view.job_id, sample);
  }

  forget(jobId) {
    this.#samples.delete(jobId);
  }

  /** {speed, eta} text of a job view. Until two views were seen, the job's averages. */
  describe(view) {
    const elapsed = view.elapsed_seconds;
    const average = (amount) => (elapsed > 0 && amount > 0 ? amount / elapsed : null);
    if (view.status === 'completed') {
      return { speed: fmt.speed(average(view.processed_frames)), eta: '' };
    }
    if (view.status !== 'processing') return { speed: '', eta: '' };
    const sample = this.#samples.get(view.job_id);
    const speed = sample?.fps ?? average(view.processed_frames);
    const rate = sample?.rate ?? average(view.percent);
    const left = rate > 0 ? (100 - view.percent) / rate : null;
    return { speed: fmt.speed(speed), eta: fmt.eta(left) };
  }
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** A job's sampling rule with its value, short: "every 2.5 s", "2 fps", "scene ≥ 0.3". */
export function samplingText(view) {
  const o = view.options ?? {};
  switch (view.mode) {
    case 'interval':
      return `every ${fmt.number(view.interval ?? o.interval)}\u00a0s`;
    case 'fps':
      return `${fmt.number(o.fps)}\u00a0fps`;
    case 'count':
      return plural(o.count, 'frame');
    case 'timestamps':
      return plural((o.timestamps ?? []).length, 'timestamp');
    case 'keyframes':
      return 'keyframes';
    case 'scene':
      return `scene ≥\u00a0${fmt.number(o.scene_threshold ?? DEFAULT_SCENE_THRESHOLD)}`;
    case 'best':
      return `best of ${o.count} stretch${o.count === 1 ? '' : 'es'}`;
    default:
      return String(view.mode ?? '');
  }
}

/**
 * The list inside `root` (data-testid=job-list). `empty` says "Loading jobs…" until the
 * first list arrives (replaceAll), then that there are none while it has no rows.
 */
export class JobList {
  #root;
  #empty;
  #loaded = false; // the server has said which jobs there are
  #rows = new Map(); // job id -> {view, item, link}
  #removed = new Set(); // ids of deleted jobs: a late view of one must not bring it back
  #pace = new Pace();
  #openId = null;

  constructor(root, empty, { onReopen }) {
    this.#root = root;
    this.#empty = empty;
    // A row is a link to #job=<id>: a click or Enter opens it through the hash. Choosing
    // the job already open changes no hash, so it is reported to bring the detail back.
    root.addEventListener('click', (event) => {
      const link = event.target.closest('a[data-testid="job-row"]');
      if (link && link.dataset.jobId === this.#openId) onReopen(link.dataset.jobId);
    });
  }

  get(jobId) {
    return this.#rows.get(jobId)?.view ?? null;
  }

  /** Show `views` (newest first, from GET /jobs or a snapshot) and nothing else. */
  replaceAll(views) {
    this.#loaded = true;
    const keep = new Set(views.map((view) => view.job_id));
    for (const jobId of [...this.#rows.keys()]) if (!keep.has(jobId)) this.remove(jobId);
    for (const view of views) this.upsert(view);
    this.#updateEmpty();
  }

  /** The list could not be loaded: say why, unless one was loaded before. */
  failed(text) {
    if (!this.#loaded) setText(this.#empty, text);
  }

  /** Add or update the row of a job view (an older view than the one shown is ignored). */
  upsert(view) {
    if (!view?.job_id || this.#removed.has(view.job_id)) return;
    const entry = this.#rows.get(view.job_id);
    if (entry && !isNewer(view, entry.view)) return;
    this.#pace.observe(view);
    if (entry) {
      entry.view = view;
      this.#render(entry);
      return;
    }
    const created = this.#build(view);
    this.#rows.set(view.job_id, created);
    this.#render(created);
    this.#insert(created);
    this.#trim();
    this.#updateEmpty();
  }

  /** Drop a job's row; `deleted`: the job is gone for good, ignore any later view of it. */
  remove(jobId, { deleted = false } = {}) {
    if (deleted) this.#removed.add(jobId);
    const entry = this.#rows.get(jobId);
    if (!entry) return;
    entry.item.remove();
    this.#rows.delete(jobId);
    this.#pace.forget(jobId);
    this.#updateEmpty();
  }

  /** Mark the row of the job shown in the detail (null: none). */
  markOpen(jobId) {
    this.#openId = jobId;
    for (const [id, entry] of this.#rows) {
      if (id === jobId) entry.link.setAttribute('aria-current', 'true');
      else entry.link.removeAttribute('aria-current');
    }
  }

  #build(view) {
    const part = (testId, tag = 'span') => el(tag, { class: testId, 'data-testid': testId });
    const link = el('a', {
      class: 'job-row',
      href: `#job=${encodeURIComponent(view.job_id)}`,
      'data-testid': 'job-row',
      dataset: { jobId: view.job_id },
    });
    const parts = {
      source: part('job-source'),
      status: part('job-status'),
      progress: el('progress', { class: 'job-progress', 'data-testid': 'job-progress', max: 100, value: 0 }),
      frames: part('job-frames'),
      speed: part('job-speed'),
      eta: part('job-eta'),
      mode: part('job-mode'),
      // The first block of the UUID tells jobs apart; the whole id is in the title and
      // in the job's detail, where it can be copied.
      id: el('span', {
        class: 'job-id',
        'data-testid': 'job-id',
        title: `job id ${view.job_id}`,
        text: String(view.job_id).split('-')[0],
      }),
      when: part('job-when'),
    };
    link.append(
      el('span', { class: 'job-line' }, parts.source, parts.status),
      parts.progress,
      el('span', { class: 'job-line job-numbers' },
        parts.frames, parts.speed, parts.eta, parts.mode, parts.id, parts.when),
    );
    if (view.job_id === this.#openId) link.setAttribute('aria-current', 'true');
    return { view, link, parts, item: el('li', {}, link) };
  }

  #render({ view, link, parts }) {
    link.dataset.status = view.status;
    setText(parts.source, view.video_source);
    parts.source.title = view.video_source ?? '';
    setText(parts.status, view.status);
    parts.status.dataset.status = view.status;
    parts.progress.value = Number.isFinite(view.percent) ? view.percent : 0;
    setText(parts.frames, `${view.processed_frames ?? 0} / ${view.total_frames ?? 0}`);
    const { speed, eta } = this.#pace.describe(view);
    setText(parts.speed, speed);
    setText(parts.eta, eta);
    setText(parts.mode, samplingText(view));
    setText(parts.when, fmt.when(view.created_at));
  }

  #insert(entry) {
    // Before the first row it sorts ahead of (rows are kept in order, newest first).
    const next = [...this.#root.children].find((item) => {
      const other = this.#rows.get(item.firstElementChild.dataset.jobId);
      return other && other !== entry && newerFirst(entry.view, other.view) < 0;
    });
    this.#root.insertBefore(entry.item, next ?? null);
  }

  #trim() {
    while (this.#rows.size > MAX_ROWS) {
      this.remove(this.#root.lastElementChild.firstElementChild.dataset.jobId);
    }
  }

  #updateEmpty() {
    this.#empty.hidden = this.#rows.size > 0;
    if (this.#loaded) setText(this.#empty, 'No jobs yet. Submit one to start.');
  }
}
