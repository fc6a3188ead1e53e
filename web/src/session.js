// The bearer token lives in memory and in sessionStorage: sessionStorage survives a
// reload of this tab (an upload resumed after a reload needs it) and dies with the tab.
// It is never written to localStorage, a cookie or a URL (docs/webapp.md).

const KEY = "idrl.session";
let current = null;

export function load() {
  if (current) return current;
  try {
    const stored = JSON.parse(sessionStorage.getItem(KEY) || "null");
    if (stored && stored.token && stored.expiresAt > Date.now()) current = stored;
  } catch {
    current = null;
  }
  return current;
}

export function save(token, expiresIn, email) {
  current = { token, email, expiresAt: Date.now() + expiresIn * 1000 };
  sessionStorage.setItem(KEY, JSON.stringify(current));
  return current;
}

export function forget() {
  current = null;
  sessionStorage.removeItem(KEY);
}

export function token() {
  const session = load();
  if (session && session.expiresAt <= Date.now()) {
    forget();
    return null;
  }
  return session ? session.token : null;
}
