// Recent frames across jobs (GET /dashboard/recent-frames): refreshed at start, when a
// job finishes or is deleted, and now and then while jobs run. A click opens the viewer.
// Until the first answer, `empty` says they are loading.
import { frameUrl, getJSON } from './api.js';
import { el, imageBox, setText } from './dom.js';
import * as fmt from './format.js';

const LIMIT = 24;
const MIN_GAP_MS = 5000; // the server caches this answer for up to 5 s anyway

export class RecentFrames {
  #root;
  #empty;
  #viewer;
  #jobName;
  #frames = [];
  #last = 0;
  #timer = null;

  /** `jobName(jobId)` gives the source shown under a frame (or null). */
  constructor(root, empty, { viewer, jobName }) {
    this.#root = root;
    this.#empty = empty;
    this.#viewer = viewer;
    this.#jobName = jobName;
    root.addEventListener('click', (event) => {
      const item = event.target.closest('[data-testid="recent-frame"]');
      if (item) {
        this.#viewer.open(() => this.#frames, Number(item.dataset.position), { noun: 'recent frame' });
      }
    });
  }

  /** Refresh now (`soon` = false) or within MIN_GAP_MS, at most once per MIN_GAP_MS. */
  refresh({ soon = false } = {}) {
    if (this.#timer) return;
    const wait = soon ? Math.max(0, this.#last + MIN_GAP_MS - Date.now()) : 0;
    this.#timer = setTimeout(() => this.#load(), wait);
  }

  async #load() {
    this.#last = Date.now();
    const answer = await getJSON(`/dashboard/recent-frames?limit=${LIMIT}`);
    this.#timer = null;
    if (!answer.ok) return;
    this.#frames = answer.body.frames ?? [];
    this.#root.replaceChildren(...this.#frames.map((frame, position) => this.#item(frame, position)));
    setText(this.#empty, 'No frames in the last hour.');
    this.#empty.hidden = this.#frames.length > 0;
  }

  #item(frame, position) {
    const source = this.#jobName(frame.job_id);
    const caption = el(
      'span',
      { class: 'recent-caption' },
      el('span', { class: 'frame-time', 'aria-hidden': 'true', text: fmt.seconds(frame.timestamp) }),
      source ? el('span', { class: 'recent-source', text: source, title: source }) : null,
    );
    const button = el(
      'button',
      {
        type: 'button',
        class: 'frame-thumb',
        'data-testid': 'recent-frame',
        dataset: { position, jobId: frame.job_id, index: frame.index },
      },
      imageBox({
        src: frameUrl(frame),
        alt: `Frame at ${fmt.seconds(frame.timestamp)}`,
        loading: 'lazy',
        decoding: 'async',
      }),
      caption,
    );
    return el('li', {}, button);
  }
}
