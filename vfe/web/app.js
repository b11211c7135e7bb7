// vfe dashboard: wires the page's parts together and keeps them live.
//
// The job list follows one EventSource on /events (every job's changes; first a
// `snapshot` of the newest jobs). At start, and each time that stream has to be opened
// again, one GET /jobs paints the list without waiting for it; until one of them
// answers, the list says it is loading. The open job is in the URL (#job=<id>) so it
// can be linked and survives a reload. When the server wants an API key, the first
// refused request asks for it (auth.js); once a key is accepted the streams are opened
// again and the lists reloaded.
import { errorText, getJSON, listen } from './api.js';
import { onKeyChange, onKeyWanted, setupKeyDialog, waitingForKey } from './auth.js';
import { JobDetail } from './detail.js';
import { byTestId, setText } from './dom.js';
import { SubmitForm } from './form.js';
import { startHealth } from './health.js';
import { JobList } from './jobs.js';
import { RecentFrames } from './recent.js';
import { StoryboardStrip } from './storyboard.js';
import { Viewer } from './viewer.js';

const RETRY_MS = [1000, 2000, 5000, 10000, 30000]; // waits before reopening /events

setupKeyDialog(byTestId('api-key-dialog'), byTestId('api-key-button'));
const viewer = new Viewer(byTestId('frame-viewer'));
const feedStatus = byTestId('feed-status');

const jobs = new JobList(byTestId('job-list'), document.querySelector('.jobs-empty'), {
  onReopen: (jobId) => detail.open(jobId, { focus: true }),
});

const detail = new JobDetail(byTestId('job-detail'), {
  viewer,
  confirmDialog: byTestId('confirm-dialog'),
  onClose: () => closeJob(),
  onDeleted: (jobId) => {
    jobs.remove(jobId, { deleted: true });
    recent.refresh();
    closeJob();
  },
  onView: (view) => {
    jobs.upsert(view); // the job's own stream also keeps its row current
    storyboard.show(view);
  },
});
const storyboard = new StoryboardStrip(byTestId('job-storyboard'));

const recent = new RecentFrames(byTestId('recent-frames'), document.querySelector('.recent-empty'), {
  viewer,
  jobName: (jobId) => jobs.get(jobId)?.video_source ?? null,
});

new SubmitForm(byTestId('submit-form'), {
  onSubmitted: async (jobId) => {
    location.hash = `job=${encodeURIComponent(jobId)}`;
    // Usually the `created` event has added the row already; without /events it has not.
    const answer = await getJSON(`/job-status/${encodeURIComponent(jobId)}`);
    if (answer.ok) jobs.upsert(answer.body);
  },
});

// --- the open job, from the URL ------------------------------------------------------

function hashJobId() {
  const match = /^#job=([^&]+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function showJobFromHash({ focus }) {
  const jobId = hashJobId();
  if (jobId) detail.open(jobId, { focus });
  else detail.close();
  if (!jobId) storyboard.clear();
  jobs.markOpen(jobId);
}

/** Close the detail: drop #job=… from the URL (a new history entry, like opening one). */
function closeJob() {
  const jobId = detail.jobId;
  if (hashJobId() !== null) history.pushState(null, '', location.pathname + location.search);
  detail.close();
  storyboard.clear();
  jobs.markOpen(null);
  const row = jobId && document.querySelector(`[data-testid="job-row"][data-job-id="${CSS.escape(jobId)}"]`);
  (row || document.getElementById('jobs-title')).focus();
}

window.addEventListener('hashchange', () => showJobFromHash({ focus: true }));
window.addEventListener('popstate', () => showJobFromHash({ focus: false }));

// --- the live job list ---------------------------------------------------------------

function setFeed(state, text) {
  feedStatus.dataset.state = state;
  setText(feedStatus, text);
}

function onJob(view) {
  jobs.upsert(view);
  detail.update(view);
}

function onFinished(view) {
  onJob(view);
  recent.refresh();
}

let failures = 0;
let stream = null; // the open /events EventSource
let retryTimer = null;

function connect() {
  retryTimer = null;
  if (waitingForKey()) {
    // Refused for want of a key: the accepted key reconnects (see onKeyChange below).
    setFeed('down', 'waiting for an API key');
    return;
  }
  const source = new EventSource('/events');
  stream = source;
  let fresh = false; // a snapshot came on this connection: it is newer than GET /jobs

  const loadJobs = async () => {
    const answer = await getJSON('/jobs?limit=50');
    const current = source === stream || stream === null; // not from a replaced stream
    if (!current) return;
    if (answer.ok && !fresh) jobs.replaceAll(answer.body?.jobs ?? []);
    else if (!answer.ok) jobs.failed(`The jobs could not be loaded: ${errorText(answer)}`);
  };
  loadJobs();

  listen(source, {
    snapshot: (data) => {
      fresh = true;
      jobs.replaceAll(data.jobs ?? []);
    },
    created: onJob,
    status: onJob,
    progress: (view) => {
      onJob(view);
      recent.refresh({ soon: true });
    },
    done: onFinished,
    failed: onFinished,
    cancelled: onFinished,
    deleted: ({ job_id: jobId }) => {
      jobs.remove(jobId, { deleted: true });
      detail.removed(jobId);
      if (jobId === detail.jobId) storyboard.clear();
      recent.refresh();
    },
  });
  source.addEventListener('open', () => {
    failures = 0;
    setFeed('ok', 'live');
  });
  source.addEventListener('error', () => {
    if (source !== stream) return;
    fresh = false;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself; meanwhile show the list as it is now.
      setFeed('warn', 'reconnecting…');
      loadJobs();
      return;
    }
    // Closed for good (an HTTP error, such as a 401, or no /events yet): open it again
    // later. loadJobs asks for a key if that was the reason.
    source.close();
    stream = null;
    if (waitingForKey()) {
      setFeed('down', 'waiting for an API key');
      return;
    }
    loadJobs();
    const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    failures += 1;
    setFeed('down', `not live: retrying in ${Math.round(wait / 1000)} s`);
    retryTimer = setTimeout(connect, wait);
  });
}

/** Open /events again now (a new key: the browser sends the new cookie). */
function reconnect() {
  clearTimeout(retryTimer);
  stream?.close();
  stream = null;
  failures = 0;
  connect();
}

// Until a key is given, retrying /events is pointless: the accepted key reconnects.
onKeyWanted(() => {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (!stream) setFeed('down', 'waiting for an API key');
});

onKeyChange(() => {
  reconnect();
  detail.reload();
  recent.refresh();
});

// --- start ---------------------------------------------------------------------------

startHealth(byTestId('health-panel'));
connect();
recent.refresh();
showJobFromHash({ focus: false });
