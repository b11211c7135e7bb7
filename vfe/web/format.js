// Numbers, times and sizes as people read them. A no-break space (\u00a0) keeps each
// number on the line of its unit.

const finite = (value) => typeof value === 'number' && Number.isFinite(value);

/** A frame time: "12.000 s". */
export function seconds(value, digits = 3) {
  return finite(value) ? `${value.toFixed(digits)}\u00a0s` : '—';
}

/** A length of time: "42.5 s", "3 min 20 s", "1 h 5 min". */
export function duration(value) {
  if (!finite(value)) return '—';
  if (value < 60) return `${value < 10 ? value.toFixed(1) : Math.round(value)}\u00a0s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes}\u00a0min ${Math.round(value % 60)}\u00a0s`;
  return `${Math.floor(minutes / 60)}\u00a0h ${minutes % 60}\u00a0min`;
}

/** What is left of a job: "~3 s left", or '' when unknown. */
export function eta(value) {
  if (!finite(value) || value < 0) return '';
  if (value < 60) return `~${Math.max(1, Math.round(value))}\u00a0s left`;
  return `~${duration(value).replace(/ \d+\u00a0s$/, '')} left`;
}

/** A throughput: "12.3 frames/s". */
export function speed(value) {
  if (!finite(value) || value < 0) return '';
  return `${value < 10 ? value.toFixed(1) : Math.round(value)}\u00a0frames/s`;
}

/** A size in bytes: "812 B", "81.2 KB", "1.6 MB", "2.1 GB". */
export function bytes(value) {
  if (!finite(value)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let size = value;
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return `${unit === 0 || size >= 100 ? Math.round(size) : size.toFixed(1)}\u00a0${units[unit]}`;
}

/** A server timestamp (ISO) as local time; the date too when it is not today. */
export function when(iso) {
  const date = new Date(iso ?? NaN);
  if (Number.isNaN(date.getTime())) return '—';
  const time = date.toLocaleTimeString();
  return date.toDateString() === new Date().toDateString()
    ? time
    : `${date.toLocaleDateString()} ${time}`;
}

/** A plain number, without float noise: 29.97, 1280. */
export function number(value, digits = 3) {
  return finite(value) ? String(Number(value.toFixed(digits))) : '—';
}

/**
 * A frame's quality, one "name value" string a measure: brightness, contrast, black (0-1
 * shares, as the form's thresholds take them), sharpness (the blur threshold's unit),
 * phash, and in best mode its stretch (counted from 1) and score. Empty for a frame made
 * before vfe measured frames (its metrics are null).
 */
export function frameMetrics(frame) {
  const parts = [];
  const add = (name, value, text) => {
    if (finite(value)) parts.push(`${name} ${text(value)}`);
  };
  add('brightness', frame?.brightness, (v) => number(v));
  add('contrast', frame?.contrast, (v) => number(v));
  add('sharpness', frame?.sharpness, (v) => number(v, 0));
  add('black', frame?.black, (v) => number(v));
  if (typeof frame?.phash === 'string' && frame.phash) parts.push(`phash ${frame.phash}`);
  add('stretch', frame?.stretch, (v) => String(v + 1));
  add('score', frame?.score, (v) => number(v));
  return parts;
}

/** Why a substituted frame is not at its target: '' for any other frame. */
export function substitution(frame) {
  if (frame?.substituted !== true) return '';
  const asked = seconds(frame.target_time);
  return `Substituted: the frame at ${asked} was rejected; this one is at ${seconds(frame.timestamp)}`;
}
