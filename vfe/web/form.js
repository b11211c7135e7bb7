// The submit form: a source (a path inside the videos folder, picked from GET /videos
// or typed; an upload, dropped or chosen, sent with XMLHttpRequest for its progress;
// or an http(s) URL, sent in video_source like a path), the sampling and output
// options of POST /video-job, and the server's 4xx answers shown in form-error and next
// to the control they are about: a 422 names its fields (an upload's `file` is the
// source); a 400 is about the video (the options are checked by 422s), and so is a 413
// for an upload or a URL (for a path it is the JSON body's size). The source's errors
// show under its control: the path, the drop zone or the URL field.
import { errorText, fieldErrors, getJSON, request, upload } from './api.js';
import { byTestId, el, setText } from './dom.js';
import * as fmt from './format.js';

// Option fields sent as text, not numbers (timestamps goes as "1, 2.5": the API splits it).
const TEXT_FIELDS = new Set(['mode', 'format', 'timestamps', 'tonemap', 'webhook_url']);
// Checkbox groups, one box a value: a list in JSON, comma-separated in an upload's form.
const LIST_FIELDS = new Set(['reject']);
// Single checkboxes: true when checked, left out (the server's default, false) when not.
const BOOLEAN_FIELDS = new Set(['dedupe', 'storyboard']);

/** data-testid of an API field: scene_threshold -> scene-threshold. */
const testIdOf = (field) => field.replaceAll('_', '-');

export class SubmitForm {
  #form;
  #onSubmitted;
  #busy = false;

  /** `onSubmitted(jobId)` is called once the server accepted a job. */
  constructor(form, { onSubmitted }) {
    this.#form = form;
    this.#onSubmitted = onSubmitted;
    const find = (id) => byTestId(id, form);
    this.ui = {
      path: find('source-path'),
      picker: find('video-picker'),
      url: find('source-url'),
      file: find('file-input'),
      drop: find('drop-zone'),
      fileName: form.querySelector('.drop-file'),
      progress: find('upload-progress'),
      progressText: form.querySelector('.upload-text'),
      mode: find('mode'),
      format: find('format'),
      submit: find('submit-button'),
      status: form.querySelector('.form-status'),
      error: find('form-error'),
    };
    for (const radio of form.querySelectorAll('input[name="source-kind"]')) {
      radio.addEventListener('change', () => this.#showKind());
    }
    this.ui.mode.addEventListener('change', () => this.#showOptions());
    this.ui.format.addEventListener('change', () => this.#showOptions());
    this.ui.picker.addEventListener('change', () => {
      if (!this.ui.picker.value) return;
      this.ui.path.value = this.ui.picker.value;
      this.#clearFieldError('video_source');
    });
    this.ui.file.addEventListener('change', () => this.#showFile());
    this.#wireDropZone();
    // Editing a field clears its error: the old message no longer describes it.
    form.addEventListener('input', (event) => {
      const name = event.target.name || (event.target.closest('.source') ? 'video_source' : null);
      if (name) this.#clearFieldError(name);
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#showKind();
    this.#showOptions();
  }

  get #kind() {
    return this.#form.querySelector('input[name="source-kind"]:checked')?.value ?? 'path';
  }

  #showKind() {
    const kind = this.#kind;
    for (const panel of this.#form.querySelectorAll('.source[data-kind]')) {
      panel.hidden = panel.dataset.kind !== kind;
    }
    this.#clearFieldError('video_source');
    if (kind === 'path') this.loadVideos();
  }

  /** Show only the fields of the chosen mode and format. */
  #showOptions() {
    const mode = this.ui.mode.value;
    const format = this.ui.format.value;
    for (const field of this.#form.querySelectorAll('[data-modes]')) {
      field.hidden = !field.dataset.modes.split(' ').includes(mode);
    }
    for (const field of this.#form.querySelectorAll('[data-formats]')) {
      field.hidden = !field.dataset.formats.split(' ').includes(format);
    }
  }

  /** Fill the picker from GET /videos; without that list, say so and keep the text box. */
  async loadVideos() {
    const { picker, path } = this.ui;
    const answer = await getJSON('/videos');
    const videos = answer.ok && Array.isArray(answer.body?.videos) ? answer.body.videos : null;
    const options = [];
    if (videos === null) {
      options.push(el('option', { value: '', text: 'no list available: type a path' }));
    } else if (videos.length === 0) {
      options.push(el('option', { value: '', text: 'no videos in the videos folder' }));
    } else {
      options.push(el('option', { value: '', text: `choose one of ${videos.length} videos…` }));
      for (const video of videos) {
        const label = `${video.path} (${fmt.bytes(video.size_bytes)})`;
        options.push(el('option', { value: video.path, text: label }));
      }
      if (answer.body.truncated) {
        options.push(el('option', { value: '', disabled: true, text: '… more videos not listed' }));
      }
    }
    picker.replaceChildren(...options);
    picker.disabled = !videos?.length;
    picker.value = videos?.some((video) => video.path === path.value) ? path.value : '';
  }

  #wireDropZone() {
    const { drop, file } = this.ui;
    const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes('Files');
    for (const type of ['dragenter', 'dragover']) {
      drop.addEventListener(type, (event) => {
        if (!hasFiles(event)) return;
        event.preventDefault();
        event.dataTransfer.dropEffect = 'copy';
        drop.classList.add('dragging');
      });
    }
    drop.addEventListener('dragleave', (event) => {
      if (!drop.contains(event.relatedTarget)) drop.classList.remove('dragging');
    });
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      drop.classList.remove('dragging');
      if (!event.dataTransfer?.files.length) return;
      file.files = event.dataTransfer.files;
      this.#showFile();
    });
    // A file dropped beside the zone must not make the browser leave the page to open it.
    for (const type of ['dragover', 'drop']) {
      window.addEventListener(type, (event) => {
        if (hasFiles(event) && !drop.contains(event.target)) event.preventDefault();
      });
    }
  }

  #showFile() {
    const chosen = this.ui.file.files[0];
    setText(this.ui.fileName, chosen ? `${chosen.name} (${fmt.bytes(chosen.size)})` : '');
    this.#clearFieldError('video_source');
  }

  /**
   * The visible option fields that are filled in: {api field: value}; a checkbox group
   * (LIST_FIELDS) gives the list of its checked values, a checkbox 'true' when checked.
   */
  #options() {
    const values = {};
    for (const control of this.#form.querySelectorAll('.options [name]')) {
      if (control.closest('[hidden]')) continue;
      if (control.type === 'checkbox') {
        if (!control.checked) continue;
        if (LIST_FIELDS.has(control.name)) (values[control.name] ??= []).push(control.value);
        else values[control.name] = 'true';
        continue;
      }
      const value = control.value.trim();
      if (value) values[control.name] = value;
    }
    return values;
  }

  async #submit() {
    if (this.#busy) return;
    this.#clearErrors();
    const kind = this.#kind;
    const options = this.#options();
    let answer;
    if (kind === 'upload') {
      const chosen = this.ui.file.files[0];
      if (!chosen) {
        this.#showErrors(null, [{ field: 'video_source', message: 'Choose a video file to upload.' }]);
        return;
      }
      const body = new FormData();
      for (const [name, value] of Object.entries(options)) {
        body.append(name, Array.isArray(value) ? value.join(',') : value);
      }
      body.append('file', chosen, chosen.name);
      answer = await this.#whileBusy('Uploading…', () => this.#upload(body));
    } else {
      // JSON: numbers as numbers; what does not parse goes as typed, for the server to judge.
      const data = {};
      const source = (kind === 'url' ? this.ui.url : this.ui.path).value.trim();
      if (source) data.video_source = source;
      for (const [name, value] of Object.entries(options)) {
        const number = Number(value);
        if (BOOLEAN_FIELDS.has(name)) data[name] = value === 'true';
        else if (LIST_FIELDS.has(name) || TEXT_FIELDS.has(name)) data[name] = value;
        else data[name] = Number.isFinite(number) ? number : value;
      }
      // A URL is downloaded by the server before it answers: that can take a while.
      const doing = kind === 'url' ? 'Submitting; the server downloads the video…' : 'Submitting…';
      answer = await this.#whileBusy(doing, () => request('POST', '/video-job', data));
    }
    if (!answer.ok) {
      const cutOff = kind === 'upload' && answer.status === 0;
      const message = cutOff
        ? 'The upload was cut off: the connection closed (is the file larger than the server accepts?).'
        : errorText(answer);
      this.#showErrors(message, this.#fieldsOf(answer, message, cutOff));
      return;
    }
    setText(this.ui.status, 'Job submitted.');
    setTimeout(() => setText(this.ui.status, ''), 4000);
    this.#onSubmitted(answer.body.job_id);
  }

  async #whileBusy(text, work) {
    this.#busy = true;
    this.ui.submit.disabled = true;
    this.#form.setAttribute('aria-busy', 'true');
    setText(this.ui.status, text);
    try {
      return await work();
    } finally {
      this.#busy = false;
      this.ui.submit.disabled = false;
      this.#form.removeAttribute('aria-busy');
      setText(this.ui.status, '');
    }
  }

  async #upload(body) {
    const { progress, progressText } = this.ui;
    progress.value = 0;
    progress.hidden = false;
    try {
      return await upload('/video-job', body, (loaded, total) => {
        progress.value = total ? (100 * loaded) / total : 0;
        setText(
          progressText,
          loaded < total
            ? `${Math.floor(progress.value)}% of ${fmt.bytes(total)} sent`
            : 'Sent; waiting for the server…',
        );
      });
    } finally {
      progress.hidden = true;
      setText(progressText, '');
    }
  }

  /** The [{field, message}] of a failed answer, each for the control it is about. */
  #fieldsOf(answer, message, cutOff) {
    const errors = fieldErrors(answer).map((error) =>
      error.field === 'file' ? { ...error, field: 'video_source' } : error,
    );
    const aboutSource =
      cutOff ||
      (typeof answer.body?.detail === 'string' &&
        (answer.status === 400 || (answer.status === 413 && this.#kind !== 'path')));
    if (aboutSource) errors.push({ field: 'video_source', message });
    return errors;
  }

  /** `message` in form-error; each {field, message} beside its field too. */
  #showErrors(message, errors) {
    setText(this.ui.error, message ?? errors.map((error) => error.message).join(' '));
    let first = null;
    for (const { field, message: text } of errors) {
      const slot = byTestId(`field-error-${testIdOf(field)}`, this.#form);
      if (!slot) continue;
      const folded = slot.closest('details');
      if (folded) folded.open = true; // an error inside the folded options must show
      setText(slot, slot.textContent ? `${slot.textContent} ${text}` : text);
      const control = this.#control(field);
      control?.setAttribute('aria-invalid', 'true');
      control?.setAttribute('aria-describedby', slot.id);
      first ??= control;
    }
    first?.focus();
  }

  /** The input an API field is typed in (video_source: the one of the chosen source). */
  #control(field) {
    if (field === 'video_source') {
      return { path: this.ui.path, upload: this.ui.file, url: this.ui.url }[this.#kind];
    }
    if (LIST_FIELDS.has(field)) return this.#form.querySelector(`.options [name="${field}"]`);
    return byTestId(testIdOf(field), this.#form);
  }

  #clearFieldError(field) {
    const slot = byTestId(`field-error-${testIdOf(field)}`, this.#form);
    if (slot) setText(slot, '');
    const controls =
      field === 'video_source' ? [this.ui.path, this.ui.file, this.ui.url] : [this.#control(field)];
    for (const control of controls) control?.removeAttribute('aria-invalid');
  }

  #clearErrors() {
    setText(this.ui.error, '');
    for (const slot of this.#form.querySelectorAll('.field-error')) setText(slot, '');
    for (const control of this.#form.querySelectorAll('[aria-invalid]')) {
      control.removeAttribute('aria-invalid');
    }
  }
}
