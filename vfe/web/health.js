// The health panel: GET /health every 2 s while the page is visible, and at once when
// it regains focus. /health answers 503 with the same JSON when the service cannot take
// jobs, so the body is read whatever the status. Its `status` is "ok"/"unavailable" on
// older servers and "healthy"/"unhealthy" on newer ones (which also say redis_available
// and active_jobs at the top level): both are read. Warning colours are for problems
// only: the in-memory cache, used whenever Redis is not there, is a normal state.
import { getJSON } from './api.js';
import { byTestId, setText } from './dom.js';
import { bytes } from './format.js';

const EVERY_MS = 2000;
const LOW_DISK_MB = 1024;
const FULL_DISK_MB = 100;

const HEALTHY = new Set(['ok', 'healthy']);
const MEMORY_CACHE = 'Redis is not reachable, so the in-memory cache is used (Redis is optional)';

/** Each item's [state, text, title] from the /health body. */
function describe(health) {
  const { database = {}, cache = {}, ffmpeg = {}, queue = {}, jobs = {}, disk = {} } = health;
  const redis = cache.backend ? cache.backend === 'redis' : health.redis_available === true;
  const running = jobs.running ?? health.active_jobs ?? 0;
  const depth = queue.depth ?? 0;
  const max = queue.max ?? Infinity;
  const free = disk.free_mb;
  let diskState = 'warn';
  if (disk.ok === false) {
    diskState = 'down'; // below MIN_FREE_DISK_MB: new jobs are refused
  } else if (typeof free === 'number') {
    const full = disk.ok === undefined && free < FULL_DISK_MB; // an older server: no disk.ok
    diskState = full ? 'down' : free < LOW_DISK_MB ? 'warn' : 'ok';
  }
  return {
    database: database.ok ? ['ok', { sqlite: 'SQLite', postgresql: 'PostgreSQL' }[database.backend] ?? 'ok'] : ['down', 'unavailable'],
    cache: redis ? ['ok', 'Redis'] : ['neutral', 'in-memory', MEMORY_CACHE],
    ffmpeg: ffmpeg.ok ? ['ok', String(ffmpeg.version ?? 'ok').split('-')[0]] : ['down', 'not found'],
    queue: [
      depth >= max ? 'down' : depth >= 0.8 * max ? 'warn' : 'ok',
      `${depth} waiting · ${running}/${jobs.max_concurrent ?? '?'} running`,
    ],
    disk: [
      diskState,
      typeof free === 'number' ? `${bytes(free * 1024 * 1024)} free` : 'unknown',
      disk.ok === false ? `Below the server's floor of ${disk.min_free_mb} MB: new jobs are refused` : '',
    ],
    workers: describeWorkers(health.workers, queue.backend),
  };
}

/** The workers chip: the embedded pool, or the live `vfe worker`s and their last heartbeat. */
function describeWorkers(workers, backend) {
  if (!workers) return ['neutral', 'unknown'];
  if (backend === 'memory') return ['ok', 'in this process'];
  const beat = workers.last_heartbeat ? `last heartbeat ${workers.last_heartbeat}` : 'no heartbeat';
  if (workers.count === 0) return ['warn', 'none live', `Jobs wait until a vfe worker starts (${beat})`];
  return ['ok', `${workers.count} live · ${workers.running} running`, beat];
}

function render(panel, answer) {
  const reachable = answer.status !== 0 && answer.body && typeof answer.body === 'object';
  const items = reachable ? describe(answer.body) : null;
  for (const name of ['database', 'cache', 'ffmpeg', 'queue', 'workers', 'disk']) {
    const item = byTestId(`health-${name}`, panel);
    const [state, text, title = ''] = items ? items[name] : ['down', 'unknown'];
    item.dataset.state = state;
    setText(item, text);
    if (item.title !== title) item.title = title;
  }
  let overall;
  if (!reachable) overall = ['down', 'server unreachable'];
  else if (HEALTHY.has(answer.body.status)) overall = ['ok', 'service ok'];
  else overall = ['down', `service ${answer.body.status ?? `HTTP ${answer.status}`}`];
  panel.dataset.state = overall[0];
  const badge = byTestId('health-status', panel);
  badge.dataset.state = overall[0];
  setText(badge, overall[1]);
}

/** Keep `panel` (data-testid=health-panel) up to date. */
export function startHealth(panel) {
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      render(panel, await getJSON('/health'));
    } finally {
      busy = false;
    }
  };
  refresh();
  setInterval(() => {
    if (document.visibilityState === 'visible') refresh();
  }, EVERY_MS);
  window.addEventListener('focus', refresh);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refresh();
  });
}
