// The frame viewer: a modal <dialog> showing one frame large, with previous/next (also
// ArrowLeft/ArrowRight), a download link, and Escape or Close to leave. It browses a
// list it asks for each time, so frames that arrive while it is open can be reached.
// The caption numbers a frame one way only, by its place in that list ("frame 4 of 13"),
// next to its time in the video; the frame's index among the job's targets is not shown.
// Under the caption: the frame's quality metrics, and for a substitute, what it replaced.
import { frameUrl } from './api.js';
import { byTestId, setText, watchImage } from './dom.js';
import * as fmt from './format.js';

export class Viewer {
  #dialog;
  #frames = () => [];
  #index = 0;
  #noun = 'frame';
  #returnFocus = null;

  constructor(dialog) {
    this.#dialog = dialog;
    this.image = byTestId('viewer-image', dialog);
    this.imageBox = dialog.querySelector('.frame-image');
    watchImage(this.image, this.imageBox);
    this.caption = byTestId('viewer-caption', dialog);
    this.substituted = byTestId('viewer-substituted', dialog);
    this.metrics = byTestId('viewer-metrics', dialog);
    this.prev = byTestId('viewer-prev', dialog);
    this.next = byTestId('viewer-next', dialog);
    this.download = byTestId('viewer-download', dialog);
    this.prev.addEventListener('click', () => this.step(-1));
    this.next.addEventListener('click', () => this.step(1));
    byTestId('viewer-close', dialog).addEventListener('click', () => dialog.close());
    // On the document, not the dialog: the keys must work wherever focus is.
    document.addEventListener('keydown', (event) => {
      if (!dialog.open || event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === 'ArrowLeft') this.step(-1);
      else if (event.key === 'ArrowRight') this.step(1);
      else return;
      event.preventDefault();
    });
    // A click on the backdrop (outside the dialog's box) closes it too.
    dialog.addEventListener('click', (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.addEventListener('close', () => {
      this.image.removeAttribute('src');
      this.#returnFocus?.focus();
      this.#returnFocus = null;
    });
  }

  /**
   * Show frame `index` of `frames()` (an array of frame views, in order); `noun` names
   * what the list holds in the caption ("frame 4 of 13", "recent frame 2 of 24").
   */
  open(frames, index, { noun = 'frame' } = {}) {
    this.#frames = frames;
    this.#index = index;
    this.#noun = noun;
    this.#returnFocus = document.activeElement;
    this.#show();
    if (!this.#dialog.open) this.#dialog.showModal();
  }

  get isOpen() {
    return this.#dialog.open;
  }

  /** The list changed under an open viewer (frames added or the job removed). */
  refresh() {
    if (!this.#dialog.open) return;
    if (this.#frames().length === 0) this.#dialog.close();
    else this.#show();
  }

  close() {
    if (this.#dialog.open) this.#dialog.close();
  }

  step(delta) {
    const target = this.#index + delta;
    if (target < 0 || target >= this.#frames().length) return;
    this.#index = target;
    this.#show();
  }

  #show() {
    const frames = this.#frames();
    this.#index = Math.min(Math.max(this.#index, 0), frames.length - 1);
    const frame = frames[this.#index];
    if (!frame) return;
    const url = frameUrl(frame);
    if (this.image.getAttribute('src') !== url) {
      this.imageBox.dataset.image = 'loading';
      this.image.src = url;
    }
    this.image.alt = `Frame at ${fmt.seconds(frame.timestamp)}`;
    if (frame.width && frame.height) {
      this.image.width = frame.width;
      this.image.height = frame.height;
    }
    const size = frame.width && frame.height ? `${frame.width}×${frame.height}` : '';
    const bytes = frame.file_size ?? frame.size_bytes; // file_size: newer servers
    const parts = [
      `${fmt.seconds(frame.timestamp)} in the video`,
      `${this.#noun} ${this.#index + 1} of ${frames.length}`,
      size,
      bytes == null ? '' : fmt.bytes(bytes),
    ];
    setText(this.caption, parts.filter(Boolean).join(' · '));
    const why = fmt.substitution(frame);
    setText(this.substituted, why);
    this.substituted.hidden = !why;
    const metrics = fmt.frameMetrics(frame).join(' · ');
    setText(this.metrics, metrics);
    this.metrics.hidden = !metrics;
    this.download.href = url;
    this.download.setAttribute('download', frame.filename ?? '');
    const focused = document.activeElement;
    this.prev.disabled = this.#index === 0;
    this.next.disabled = this.#index === frames.length - 1;
    // A button disabled under the focus would drop it to the page: keep it in the dialog.
    if (this.#dialog.open && focused?.disabled) {
      const other = focused === this.prev ? this.next : this.prev;
      (other.disabled ? byTestId('viewer-close', this.#dialog) : other).focus();
    }
  }
}
