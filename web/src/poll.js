// Live updates by polling: never faster than every 2 s, slower (up to 30 s) while
// nothing changes, back to 2 s when something does, and not at all while the tab is
// hidden (Page Visibility API); showing the tab again refreshes at once.

export const MIN_INTERVAL_MS = 2000;
export const MAX_INTERVAL_MS = 30000;
const BACKOFF = 1.5;

export function poll(load, { onChange = () => true } = {}) {
  let interval = MIN_INTERVAL_MS;
  let timer = null;
  let stopped = false;
  let running = false;
  let lastRun = 0;

  async function run() {
    timer = null;
    if (stopped || document.hidden || running) return;
    running = true;
    lastRun = Date.now();
    let again = true;
    try {
      const result = await load();
      again = result !== false;
      interval = onChange(result) ? MIN_INTERVAL_MS : Math.min(interval * BACKOFF, MAX_INTERVAL_MS);
    } catch {
      interval = Math.min(interval * BACKOFF, MAX_INTERVAL_MS);
    } finally {
      running = false;
    }
    if (again) schedule(interval);
    else stop();
  }

  function schedule(delay) {
    if (stopped || document.hidden) return;
    clearTimeout(timer);
    timer = setTimeout(run, Math.max(delay, MIN_INTERVAL_MS - (Date.now() - lastRun), 0));
  }

  function visibility() {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      interval = MIN_INTERVAL_MS;
      schedule(0);
    }
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visibility);
  }

  document.addEventListener("visibilitychange", visibility);
  return {
    stop,
    // Something happened here (a submission, a delete): look again soon, at the fast rate.
    nudge() {
      interval = MIN_INTERVAL_MS;
      schedule(0);
    },
    start() {
      schedule(0);
      return this;
    },
  };
}
