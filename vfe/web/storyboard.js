// The job detail's storyboard strip: a timeline of the job's window that shows, above
// the pointer, the storyboard tile a video player would show there (GET
// /job/{id}/storyboard.json: each tile's cue times and its box on a sprite sheet). The
// tile under time t is the last one whose cue starts at or before t, as a player picks
// cues. Keyboard: the strip is a slider; arrows step a tile, Home and End go to the ends.
import { getJSON } from './api.js';
import { byTestId, setText } from './dom.js';
import * as fmt from './format.js';

const PREVIEW_WIDTH = 200; // px a tile is shown at, at most (a 1024 px tile is scaled down)

export class StoryboardStrip {
  #root;
  #jobId = null;
  #board = null;
  #start = 0; // the window the strip spans, s
  #end = 0;
  #tile = -1;

  constructor(root) {
    this.#root = root;
    const find = (id) => byTestId(id, root);
    this.ui = {
      strip: find('storyboard-strip'),
      marker: root.querySelector('.storyboard-marker'),
      preview: find('storyboard-preview'),
      tile: find('storyboard-tile'),
      time: find('storyboard-time'),
    };
    const strip = this.ui.strip;
    strip.addEventListener('pointermove', (event) => this.#pointAt(event));
    strip.addEventListener('pointerdown', (event) => this.#pointAt(event));
    strip.addEventListener('pointerleave', () => {
      if (document.activeElement !== strip) this.#hide();
    });
    strip.addEventListener('focus', () => this.#showTile(Math.max(0, this.#tile)));
    strip.addEventListener('blur', () => this.#hide());
    strip.addEventListener('keydown', (event) => this.#key(event));
  }

  /** Show the storyboard of `view`'s job once it has one (a completed job that asked). */
  async show(view) {
    if (view?.job_id !== this.#jobId) this.clear();
    if (!view || view.status !== 'completed' || !view.plan?.storyboard || this.#jobId) return;
    const jobId = view.job_id;
    this.#jobId = jobId;
    const answer = await getJSON(`/job/${encodeURIComponent(jobId)}/storyboard.json`);
    if (jobId !== this.#jobId || !answer.ok || !answer.body.tiles?.length) return;
    this.#board = answer.body;
    this.#start = Math.min(view.options?.start ?? 0, this.#board.tiles[0].start);
    this.#end = Math.max(this.#board.end, this.#start);
    this.#root.dataset.jobId = jobId;
    const first = this.#board.tiles[0];
    const room = first.h * Math.min(1, PREVIEW_WIDTH / first.w) + 40; // the tile and its time
    this.#root.style.setProperty('--preview-room', `${Math.ceil(room)}px`);
    this.ui.strip.setAttribute('aria-valuemin', '0');
    this.ui.strip.setAttribute('aria-valuemax', String(this.#board.tiles.length - 1));
    this.#root.hidden = false;
  }

  /** Hide the strip and forget its job. */
  clear() {
    this.#jobId = null;
    this.#board = null;
    this.#tile = -1;
    this.#hide();
    delete this.#root.dataset.jobId;
    this.#root.hidden = true;
  }

  /** The index of the tile a player shows at `t` seconds. */
  tileAt(t) {
    const tiles = this.#board.tiles;
    let low = 0;
    let high = tiles.length - 1;
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if (tiles[middle].start <= t) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  #pointAt(event) {
    if (!this.#board) return;
    const box = this.ui.strip.getBoundingClientRect();
    const share = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const t = this.#start + share * (this.#end - this.#start);
    this.#showTile(this.tileAt(t), share, t);
  }

  #key(event) {
    if (!this.#board) return;
    const last = this.#board.tiles.length - 1;
    const moves = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1 };
    let tile;
    if (event.key in moves) tile = Math.min(last, Math.max(0, this.#tile + moves[event.key]));
    else if (event.key === 'Home') tile = 0;
    else if (event.key === 'End') tile = last;
    else return;
    event.preventDefault();
    this.#showTile(tile);
  }

  /** Show tile `index` at `share` of the strip (its cue's start when not given). */
  #showTile(index, share, t) {
    if (!this.#board) return;
    const tile = this.#board.tiles[index];
    const sheet = this.#board.sheets[tile.sheet];
    const span = this.#end - this.#start || 1;
    const at = t ?? tile.start;
    const where = share ?? Math.min(1, Math.max(0, (at - this.#start) / span));
    this.#tile = index;
    const scale = Math.min(1, PREVIEW_WIDTH / tile.w);
    const { style, dataset } = this.ui.tile;
    style.width = `${tile.w * scale}px`;
    style.height = `${tile.h * scale}px`;
    style.backgroundImage = `url("${encodeURI(tile.url)}")`;
    style.backgroundSize = `${sheet.width * scale}px ${sheet.height * scale}px`;
    style.backgroundPosition = `${-tile.x * scale}px ${-tile.y * scale}px`;
    Object.assign(dataset, { tile: index, sheet: tile.sheet, x: tile.x, y: tile.y, frame: tile.frame });
    setText(this.ui.time, fmt.seconds(at));
    this.ui.marker.style.left = `${where * 100}%`;
    this.ui.preview.hidden = false;
    this.ui.marker.hidden = false;
    // Over the pointer, but kept within the strip's ends (a preview is wider than a margin).
    const width = this.ui.strip.clientWidth;
    const half = Math.min(width / 2, this.ui.preview.offsetWidth / 2);
    this.ui.preview.style.left = `${Math.min(width - half, Math.max(half, where * width))}px`;
    this.ui.strip.setAttribute('aria-valuenow', String(index));
    this.ui.strip.setAttribute('aria-valuetext', `${fmt.seconds(tile.start)}: frame ${tile.frame}`);
  }

  #hide() {
    this.ui.preview.hidden = true;
    this.ui.marker.hidden = true;
  }
}
