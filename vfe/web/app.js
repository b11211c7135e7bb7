// vfe dashboard: submit a job, follow it live over Server-Sent Events.
// Everything that comes from the server is inserted as text, never as HTML.
const $ = (id) => document.getElementById(id);
let stream = null;
let currentJob = null;

function setText(id, text) { $(id).textContent = text; }

function describeError(body, status) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => `${(e.loc || []).slice(1).join('.')}: ${e.msg}`).join('; ');
  }
  if (body && typeof body.detail === 'string') return body.detail;
  return `request failed (${status})`;
}

async function refreshHealth() {
  try {
    const res = await fetch('/health');
    const body = await res.json();
    const badge = $('health');
    badge.textContent = `${body.status} · cache: ${body.cache.backend} · queue: ${body.queue.depth}`;
    badge.className = `badge ${body.status}`;
  } catch (err) {
    setText('health', 'unreachable');
  }
}

function showJob(view) {
  $('job').hidden = false;
  setText('job-id', view.job_id);
  setText('job-status', view.status);
  $('job-status').className = `badge ${view.status}`;
  setText('job-counts', `${view.processed_frames} / ${view.total_frames} frames`);
  $('job-progress').value = view.percent || 0;
  setText('job-error', view.error_message || '');
}

function addFrame(frame) {
  const figure = document.createElement('figure');
  const img = document.createElement('img');
  img.loading = 'lazy';
  img.alt = `frame at ${frame.timestamp} s`;
  img.src = frame.url;
  const caption = document.createElement('figcaption');
  caption.textContent = `${frame.timestamp.toFixed(3)} s`;
  figure.append(img, caption);
  $('gallery').append(figure);
}

function follow(jobId) {
  if (stream) stream.close();
  currentJob = jobId;
  $('gallery').replaceChildren();
  stream = new EventSource(`/job-status/${jobId}/events`);
  for (const type of ['snapshot', 'status', 'progress', 'done', 'failed', 'cancelled']) {
    stream.addEventListener(type, (event) => {
      showJob(JSON.parse(event.data));
      if (['done', 'failed', 'cancelled'].includes(type)) stream.close();
    });
  }
  stream.addEventListener('frame', (event) => addFrame(JSON.parse(event.data)));
}

$('submit-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  setText('form-error', '');
  const file = $('file').files[0];
  let res;
  if (file) {
    const body = new FormData();
    body.append('interval', $('interval').value);
    body.append('file', file);
    res = await fetch('/video-job', { method: 'POST', body });
  } else {
    res = await fetch('/video-job', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ video_source: $('video_source').value, interval: $('interval').value }),
    });
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) { setText('form-error', describeError(body, res.status)); return; }
  follow(body.job_id);
});

$('cancel').addEventListener('click', async () => {
  if (!currentJob || !window.confirm('Cancel this job and delete its frames?')) return;
  const res = await fetch(`/job/${currentJob}`, { method: 'DELETE' });
  if (res.ok) { setText('job-status', 'cancelled'); $('gallery').replaceChildren(); }
});

refreshHealth();
setInterval(refreshHealth, 5000);
